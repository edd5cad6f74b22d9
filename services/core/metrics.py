"""Every Prometheus metric of tsmindex, declared once (prefix ``tsmindex_``, base units)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)

VIDEOS_INDEXED = Counter(
    "tsmindex_videos_indexed_total", "Index jobs finished, by outcome (succeeded/failed).", ["outcome"]
)
JOB_ERRORS = Counter("tsmindex_job_errors_total", "Index job errors, by reason.", ["reason"])
CLIPS_INFERRED = Counter("tsmindex_clips_inferred_total", "Clips classified by the workers.")
STAGE_SECONDS = Histogram(
    "tsmindex_stage_duration_seconds",
    "Time per pipeline stage (fetch, decode, inference, store).",
    ["stage"],
    buckets=STAGE_BUCKETS,
)
INDEX_LATENCY_SECONDS = Histogram(
    "tsmindex_index_latency_seconds",
    "End-to-end latency: upload accepted to labels stored.",
    buckets=STAGE_BUCKETS,
)
UPLOADED_BYTES = Counter("tsmindex_uploaded_bytes_total", "Video bytes accepted by the API.")
