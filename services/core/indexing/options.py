"""How a job indexes its video: one validated type for the API (form or JSON), backfills, the CLI
and embedded mode. Stored on the job as given (unset fields omitted); ``resolve`` fills the rest
from the settings when the job runs, so a job keeps meaning what its submitter asked for."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, Field, field_validator

from services.core.config import Settings

Sampling = Literal["exact", "keyframe"]


class IndexOptions(BaseModel):
    window_s: float | None = Field(default=None, gt=0, le=600, description="window length (s)")
    top_k: int | None = Field(default=None, ge=1, le=100)
    min_score: float | None = Field(default=None, ge=0, le=1)
    include: list[str] = Field(default_factory=list, max_length=1000, description="keep only these labels")
    exclude: list[str] = Field(default_factory=list, max_length=1000, description="drop these labels")
    webhook_url: AnyHttpUrl | None = None
    sampling: Sampling | None = Field(
        default=None, description="segment centres (exact) or keyframes inside segments (keyframe)"
    )

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
        """What a job row stores: the fields that were set."""
        data = self.model_dump(include=set(IndexOptions.model_fields), exclude_none=True, mode="json")
        return {k: v for k, v in data.items() if v != []}

    @classmethod
    def from_job_options(cls, stored: dict[str, Any]) -> IndexOptions:
        return cls.model_validate({k: v for k, v in stored.items() if k in cls.model_fields})

    def resolve(self, settings: Settings) -> ResolvedOptions:
        return ResolvedOptions(
            window_s=self.window_s or settings.window_s,
            top_k=self.top_k or settings.top_k,
            min_score=settings.min_score if self.min_score is None else self.min_score,
            include=tuple(self.include),
            exclude=tuple(self.exclude),
            webhook_url=str(self.webhook_url) if self.webhook_url is not None else None,
            sampling=self.sampling or settings.sampling,
        )


class ResolvedOptions(BaseModel, frozen=True):
    """Options with every default filled in: what a run uses."""

    window_s: float
    top_k: int
    min_score: float
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    webhook_url: str | None = None
    sampling: Sampling = "exact"

    def keeps(self, label: str) -> bool:
        return (not self.include or label in self.include) and label not in self.exclude
