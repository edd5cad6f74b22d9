"""Request and response bodies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import AnyHttpUrl, BaseModel, Field, field_validator


class IndexOptions(BaseModel):
    window_s: float | None = Field(default=None, gt=0, le=600, description="window length (s)")
    top_k: int | None = Field(default=None, ge=1, le=100)
    min_score: float | None = Field(default=None, ge=0, le=1)
    include: list[str] = Field(default_factory=list, max_length=1000, description="keep only these labels")
    exclude: list[str] = Field(default_factory=list, max_length=1000, description="drop these labels")
    webhook_url: AnyHttpUrl | None = None

    @field_validator("include", "exclude", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        # Form fields arrive as "a,b" or repeated fields.
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [part.strip() for item in value for part in str(item).split(",") if part.strip()]
        return value

    def to_job_options(self) -> dict[str, Any]:
        data = self.model_dump(include=set(IndexOptions.model_fields), exclude_none=True, mode="json")
        return {k: v for k, v in data.items() if v != []}


class SourceRequest(IndexOptions):
    source_uri: str = Field(pattern=r"^s3://[^/]+/.+", description="s3://bucket/key")


class ModelRef(BaseModel):
    name: str
    version: str


class JobOut(BaseModel):
    id: uuid.UUID
    video_id: uuid.UUID
    status: str
    reason: str | None
    detail: str | None
    attempts: int
    progress: float
    model: ModelRef
    options: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duplicate: bool = Field(default=False, description="the same bytes were already submitted")


class LabelOut(BaseModel):
    label: str
    index: int
    score: float
    rank: int


class WindowOut(BaseModel):
    index: int
    start_ms: int
    end_ms: int
    labels: list[LabelOut]


class VideoOut(BaseModel):
    id: uuid.UUID
    sha256: str | None
    filename: str | None
    source_uri: str | None
    content_type: str | None
    size_bytes: int | None
    duration_s: float | None
    fps: float | None
    width: int | None
    height: int | None
    codec: str | None
    created_at: datetime
    model: ModelRef
    labels: list[LabelOut]
    windows: list[WindowOut]
    jobs: list[JobOut]


class SearchHit(BaseModel):
    video_id: uuid.UUID
    label: str
    score: float
    model: ModelRef
    filename: str | None
    duration_s: float | None


class SearchPage(BaseModel):
    items: list[SearchHit]
    next_cursor: str | None


class LabelCount(BaseModel):
    label: str
    videos: int


class LabelsOut(BaseModel):
    items: list[LabelCount]
