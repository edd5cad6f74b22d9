"""Request and response bodies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

from services.core.indexing.options import IndexOptions

MODEL_FIELD = Field(
    default=None,
    max_length=401,
    description="a served model, NAME or NAME:VERSION (default: the served default version)",
)


# A valid S3 bucket name (3-63 lowercase letters, digits, dots and hyphens): anything else is the
# caller's mistake (422), never a storage error.
S3_BUCKET = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"


def _check_bucket(uri: str | None) -> str | None:
    # What the pattern cannot say: no "..", no "-." or ".-", not an IP address (AWS's naming rules).
    if uri is None:
        return uri
    bucket = uri.removeprefix("s3://").split("/", 1)[0]
    if ".." in bucket or "-." in bucket or ".-" in bucket or bucket.replace(".", "").isdigit():
        raise ValueError(f"{bucket!r} is not a valid S3 bucket name")
    return uri


class SourceRequest(IndexOptions):
    source_uri: str = Field(pattern=rf"^s3://{S3_BUCKET}/.+", max_length=2048, description="s3://bucket/key")
    model: str | None = MODEL_FIELD

    _bucket = field_validator("source_uri")(_check_bucket)


class ErrorOut(BaseModel):
    """Every error but a validation error (422): what went wrong, in words."""

    detail: str


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "no such object"}}


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
    next_attempt_at: datetime | None = Field(
        default=None, description="a deferred job (an outage) runs again from then on"
    )
    sampling: str | None = Field(default=None, description="exact or keyframe: how frames were chosen")
    shortfall_frames: int | None = Field(
        default=None, description="chosen frames that did not decode (replaced by their window's nearest)"
    )
    shortfall_windows: list[int] | None = Field(default=None, description="the windows they fell in")
    decode_fallback: bool | None = Field(default=None, description="decoded forward instead of by seeking")
    covered_s: float | None = Field(default=None, description="seconds of the video inside a window")
    truncated: bool = Field(default=False, description="a window cap stopped indexing before the end")
    duplicate: bool = Field(default=False, description="the same bytes were already submitted")


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None


class LabelOut(BaseModel):
    label: str
    index: int
    score: float
    rank: int
    peak_score: float | None = Field(default=None, description="video labels: the best window's score")
    peak_window: int | None = None


class WindowOut(BaseModel):
    index: int
    start_ms: int
    end_ms: int
    labels: list[LabelOut]
    thumbnail_url: str | None = None


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
    sampling: str | None = None
    shortfall_frames: int | None = None
    shortfall_windows: list[int] | None = None
    decode_fallback: bool | None = None
    labels: list[LabelOut]
    segments: list[SegmentOut]
    windows: list[WindowOut]
    jobs: list[JobOut]


class SearchHit(BaseModel):
    video_id: uuid.UUID
    label: str
    score: float = Field(description="the mean over the video's windows")
    peak_score: float = Field(description="the best window's score")
    peak_window: int | None
    model: ModelRef
    filename: str | None
    duration_s: float | None
    thumbnail_url: str | None = Field(default=None, description="the best window's thumbnail")


class SearchPage(BaseModel):
    items: list[SearchHit]
    next_cursor: str | None


class SegmentOut(BaseModel):
    """A run of consecutive windows that all have ``label`` among their top labels."""

    label: str
    start_ms: int
    end_ms: int
    windows: int
    score: float = Field(description="the best window's score")
    mean_score: float
    peak_window: int | None = None


class MomentHit(SegmentOut):
    id: int = Field(description="the moment: `GET /v1/moments/{id}/similar` finds moments like it")
    video_id: uuid.UUID
    filename: str | None
    model: ModelRef
    thumbnail_url: str | None = Field(default=None, description="its best window's thumbnail")


class MomentPage(BaseModel):
    items: list[MomentHit]
    next_cursor: str | None


class LabelCount(BaseModel):
    label: str
    videos: int
    match: str | None = Field(default=None, description="how it matched `q`: exact, prefix, ..., fuzzy")


class LabelsOut(BaseModel):
    items: list[LabelCount]


class BackfillRequest(IndexOptions):
    source_uri: str = Field(
        pattern=rf"^s3://{S3_BUCKET}(/.*)?$", max_length=2048, description="s3://bucket/prefix"
    )
    model: str | None = MODEL_FIELD
    extensions: list[str] | None = Field(
        default=None, max_length=100, description="keys to index by extension (default: video extensions)"
    )
    all_extensions: bool = Field(default=False, description="index every key whatever its extension")
    min_size: int = Field(default=1, ge=0, description="skip smaller objects (bytes)")
    max_size: int | None = Field(default=None, ge=0, description="skip larger objects (bytes)")
    modified_since: datetime | None = Field(default=None, description="skip objects modified before")
    output_uri: str | None = Field(
        default=None,
        pattern=rf"^s3://{S3_BUCKET}(/.*)?$",
        max_length=2048,
        description="s3://bucket/prefix: one JSON Lines object per video once the backfill completes",
    )

    _buckets = field_validator("source_uri", "output_uri")(_check_bucket)


class BackfillCountsOut(BaseModel):
    listed: int
    skipped: int
    queued: int
    succeeded: int
    failed: int


class ObjectFailureOut(BaseModel):
    key: str
    reason: str | None
    detail: str | None


class BackfillOut(BaseModel):
    id: uuid.UUID
    source_uri: str
    status: str
    reason: str | None
    detail: str | None
    model: ModelRef
    filters: dict[str, Any]
    options: dict[str, Any]
    counts: BackfillCountsOut
    cursor_key: str | None = Field(description="last listed key whose outcome is stored")
    failures_by_reason: dict[str, int]
    failures: list[ObjectFailureOut] = Field(description="the first failed objects, by key")
    created_at: datetime
    listed_at: datetime | None
    finished_at: datetime | None
    output_uri: str | None
    exported_at: datetime | None


class MomentSpan(BaseModel):
    start_ms: int
    end_ms: int


class MovedMomentOut(BaseModel):
    label: str
    a: MomentSpan
    b: MomentSpan
    start_shift_ms: int
    end_shift_ms: int


class MomentOut(MomentSpan):
    label: str


class VideoChangeOut(BaseModel):
    video_id: uuid.UUID
    top_a: str | None
    top_b: str | None
    gained: list[str] = Field(description="video-level labels b has and a has not")
    lost: list[str]
    jaccard: float = Field(description="|a ∩ b| / |a ∪ b| of the two label sets")
    moved: list[MovedMomentOut] = Field(description="moments of one label whose start or end shifted")
    appeared: list[MomentOut]
    vanished: list[MomentOut]


class ComparisonOut(BaseModel):
    a: ModelRef
    b: ModelRef
    compared: int = Field(description="videos both versions indexed")
    only_a: int
    only_b: int
    top1_agreement: float = Field(description="share of compared videos whose top label is the same")
    mean_jaccard: float
    moments_moved: int
    changed: int = Field(description="compared videos with any difference")
    videos: list[VideoChangeOut] = Field(description="the first `limit` changed videos")


class ReindexRequest(IndexOptions):
    model: str = Field(max_length=401, description="the served version to index with, NAME:VERSION")
    where: dict[str, str] = Field(
        default_factory=dict,
        max_length=6,
        description="which videos (all must hold): label, min_score, since, until (ISO dates), prefix "
        "(source URI or file name), from (NAME:VERSION that indexed them); default every video",
    )


class SimilarHit(BaseModel):
    """A window like the query: `score` is the cosine similarity of their clip embeddings."""

    video_id: uuid.UUID
    filename: str | None
    window_index: int
    start_ms: int
    end_ms: int
    score: float
    model: ModelRef
    thumbnail_url: str | None


class SimilarPage(BaseModel):
    items: list[SimilarHit]


Scope = Literal["read", "write", "backfill", "admin"]
DEFAULT_KEY_SCOPES: tuple[Scope, ...] = ("read", "write", "backfill")


class KeyOut(BaseModel):
    """An API key as an administrator sees it (never the key itself)."""

    id: uuid.UUID
    prefix: str
    name: str
    tenant: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    replaced_by: uuid.UUID | None
    active: bool


class KeysOut(BaseModel):
    items: list[KeyOut]


class NewKeyOut(KeyOut):
    key: str = Field(description="the key itself: shown this once, stored only as a keyed hash")


class KeyRequest(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    tenant: str | None = Field(default=None, max_length=200, description="an existing tenant (default: NAME)")
    scopes: list[Scope] = Field(default_factory=lambda: list(DEFAULT_KEY_SCOPES), min_length=1, max_length=4)
    expires_at: datetime | None = None


class RotateRequest(BaseModel):
    grace_s: float = Field(
        default=86400.0, ge=0, le=90 * 86400, description="how long the old key still works"
    )


class TenantOut(BaseModel):
    id: uuid.UUID
    name: str
    s3_allow: list[str] | None = Field(description="bucket/key-glob patterns; null: the deployment default")


class AllowListRequest(BaseModel):
    s3_allow: list[Annotated[str, Field(min_length=1, max_length=1100)]] | None = Field(
        default=None, max_length=1000, description="null or absent: back to the deployment default"
    )


class OwnTenantOut(TenantOut):
    webhook_secret: str | None = Field(description="verifies this tenant's webhooks (whsec_...)")
