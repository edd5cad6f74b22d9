"""One settings object, read from ``TSMINDEX_*`` environment variables (and a ``.env`` file)."""

from __future__ import annotations

import os
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Mode(StrEnum):
    embedded = "embedded"  # one process, SQLite, local storage, in-process inference
    platform = "platform"  # API + Celery workers + TorchServe + Postgres/Redis/S3


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TSMINDEX_", env_file=".env", extra="ignore")

    mode: Mode = Mode.embedded
    data_dir: Path = Path("var")

    # Media limits: a file beyond any of them fails its job with a "too large" reason.
    max_upload_bytes: int = 2 * 1024**3
    max_pixels_per_frame: int = 7680 * 4320
    max_duration_s: float = 6 * 3600.0
    decode_budget_s: float = 300.0  # wall-clock budget per file: decoding never hangs a worker
    window_s: float = 10.0  # one clip per window (a Kinetics clip is 10 s)
    # None: every window of every accepted video (clips are streamed, memory stays flat). A lower
    # cap stops early and the job records it (``truncated``, ``covered_s``): never silently.
    max_windows: int | None = Field(default=None, ge=1)
    num_segments: int = 8
    # Which frame of each TSN segment a clip takes: its centre ("exact") or a keyframe inside the
    # segment ("keyframe", decodes far fewer frames). README "Sampling" has the measured trade-off.
    sampling: Literal["exact", "keyframe"] = "exact"
    # Where workers decode and resize: "cpu", or "cuda[:N]" for NVDEC and GPU resizing (falls back
    # to the CPU where PyAV or torch sees no GPU). docker-compose.gpu.yml sets it.
    decode_device: str = "cpu"
    # A video whose sampled frames fail to decode beyond this fraction fails as corrupt; below it,
    # each missing frame is replaced by its window's nearest decoded frame and counted.
    max_shortfall_fraction: float = Field(default=0.25, ge=0.0, le=1.0)
    # Real sample videos for tests and benchmarks (`tsmindex corpus fetch`), outside the repository.
    corpus_dir: Path = Path.home() / ".cache" / "tsmindex" / "corpus"

    # Secrets have no defaults outside embedded mode (checked below).
    api_keys_pepper: SecretStr | None = None
    torchserve_token: SecretStr | None = None

    torchserve_inference_url: str = "http://127.0.0.1:8080"
    torchserve_management_url: str = "http://127.0.0.1:8081"
    torchserve_metrics_url: str = "http://127.0.0.1:8082"
    model_name: str = "tsm"
    # TorchServe writes key_file.json at start; its inference key is used when no token is set.
    torchserve_key_file: Path | None = None
    inference_batch_size: int | None = None  # None: 16 on CUDA, the measured CPU default otherwise
    torchserve_max_batch_delay_ms: int = 50
    torchserve_workers: int = 1
    torchserve_max_in_flight: int = 32  # clips in flight per client: two batches of 16
    torchserve_timeout_s: float = 120.0
    torchserve_connect_timeout_s: float = 5.0
    torchserve_max_retries: int = 5
    torchserve_backoff_base_s: float = 0.25
    torchserve_backoff_cap_s: float = 8.0
    torchserve_grpc_inference_port: int = 7070  # TorchServe always opens gRPC (on 127.0.0.1)
    torchserve_grpc_management_port: int = 7071

    # SQLAlchemy URL; a SQLite file under data_dir when unset (embedded mode).
    database_url: str | None = None
    redis_url: str = "redis://127.0.0.1:6379/0"

    # Indexing platform (API, workers, embedded mode).
    checkpoint_path: Path | None = None  # model for in-process inference; swap models here
    model_version: str = "1"  # the served model's version; dedupe key together with model_name
    inference_backend: str = "inprocess"  # "inprocess" | "torchserve"
    # In-process precision; "auto": fp16 on CUDA, bf16 on CPUs with native bf16, else fp32. "int8"
    # (opt-in, CPU) runs int8_model_path, made by `tsmindex model quantize` from checkpoint_path.
    inference_precision: Literal["auto", "fp32", "fp16", "bf16", "int8"] = "auto"
    int8_model_path: Path | None = None
    inference_compile: bool = False  # torch.compile the in-process network (slow start; for GPUs)
    clip_resize: int = 256  # worker-side resize/crop: must match the served model's preprocessing
    clip_crop: int = 224
    top_k: int = 5
    window_top_k: int = 20  # labels kept per window (stored: later thresholds need no re-decoding)
    thumbnails: bool = True  # one JPEG per window (a frame the model saw) in object storage
    clip_chunk_windows: int = Field(default=32, ge=1)  # windows decoded and inferred at a time
    min_score: float = 0.0
    storage_backend: str = "local"  # "local" (data_dir/objects) | "s3"
    s3_endpoint_url: str | None = None
    s3_bucket: str = "tsmindex"
    s3_region: str = "us-east-1"
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_addressing_style: str = "auto"  # "auto" | "path" (MinIO, Ceph) | "virtual"
    # Where tenants may point sources, backfills and outputs ("bucket/key-glob"; see allowlist.py):
    # the default of tenants without a list of their own. None: every bucket.
    s3_allow: list[str] | None = None
    # Bulk S3 backfill: listing page size, and the broker queue length at which listing waits.
    backfill_page_size: int = 1000
    backfill_max_queued: int = 1000
    backfill_poll_s: float = 1.0
    io_timeout_s: float = 30.0
    job_max_attempts: int = 3  # runs that died or hit the time limit before the job fails
    job_time_limit_s: float = 1800.0  # per job; the broker's visibility timeout sits above it
    # Leases: a running job's owner renews its lease every heartbeat; an expired lease means the run
    # died and the reaper queues the job again. Recovery takes about lease + reaper interval.
    job_lease_s: float = Field(default=60.0, gt=0)
    job_heartbeat_s: float = Field(default=15.0, gt=0)
    reaper_interval_s: float = Field(default=10.0, gt=0)
    # A queued job whose wake-up message was sent this long ago and never picked up is sent again
    # (only while the broker queue is empty, so a long backlog is not doubled).
    job_resend_after_s: float = Field(default=30.0, ge=0)
    # Outages defer a job with capped exponential backoff until its deadline, then it fails.
    job_retry_base_s: float = Field(default=5.0, gt=0)
    job_retry_cap_s: float = Field(default=120.0, gt=0)
    job_deadline_s: float = Field(default=3600.0, gt=0)
    # While the model server is unreachable a worker takes no job; it probes /ping this often.
    breaker_probe_s: float = Field(default=5.0, gt=0)
    backfill_resume_after_s: float = Field(default=60.0, ge=0)  # a `listing` backfill idle this long
    # Webhooks: signed Standard-Webhooks style with this secret ("whsec_" + base64, or any string)
    # unless the job's tenant has its own.
    webhook_secret: SecretStr | None = None
    webhook_attempts: int = 3  # tries per delivery round
    webhook_max_rounds: int = 10  # delivery rounds (with backoff) before a webhook is given up
    webhook_retry_base_s: float = Field(default=5.0, gt=0)
    webhook_retry_cap_s: float = Field(default=600.0, gt=0)
    # Database pool per process; a request that waits longer than the timeout answers 503.
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    db_pool_timeout_s: float = Field(default=10.0, gt=0)
    api_max_concurrent_uploads: int = Field(default=64, ge=1)  # beyond: 503 with Retry-After
    webhook_deadline_s: float = 10.0  # one deadline for a whole delivery: connect, send, response
    webhook_allow_http: bool = False  # https only unless set (test rigs, a trusted internal network)
    # Hosts or networks a webhook may reach although private, loopback or link-local ("10.0.0.0/8").
    webhook_allow_networks: list[str] = Field(default_factory=list)
    # Request bounds: bodies of anything but a video upload, per-key request rate and concurrent
    # uploads (both in Redis, platform mode only; 0 turns a limit off).
    max_json_bytes: int = 64 * 1024
    rate_limit_per_minute: int = 600
    max_concurrent_uploads: int = 4
    upload_slot_ttl_s: float = 3600.0  # a slot a crashed replica held frees itself after this
    # /metrics: on the API port (open, or only with a key), or on a port of its own (then not on
    # the API port at all), e.g. 127.0.0.1:9102 for a Prometheus on the same host.
    metrics_require_key: bool = False
    api_metrics_port: int = 0
    api_metrics_host: str = "127.0.0.1"
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    worker_metrics_port: int = 9101  # 0: no worker exporter
    worker_metrics_host: str = "127.0.0.1"  # 0.0.0.0 where Prometheus runs on another host
    prometheus_url: str = "http://127.0.0.1:9090"  # read by `tsmindex status`
    # A CLI that drives a remote platform through its HTTP API (`tsmindex --api URL`) instead of
    # the database: the API's base URL and an API key of it.
    api_url: str | None = None
    api_key: SecretStr | None = None

    # Known models (`tsmindex models`): the one used when no checkpoint is named, where downloads are
    # kept, and a mirror that serves the publishers' files under the same paths (offline sites, tests).
    default_model: str = "tsm-r50-kinetics400"
    model_cache_dir: Path | None = None  # None: $XDG_CACHE_HOME/tsmindex/models, else ~/.cache/...
    model_mirror_url: str | None = None  # e.g. http://models.internal:8080 replaces https://hanlab.mit.edu
    # Offline must fail fast: connecting (and resolving the name) gets this long, reading io_timeout_s.
    model_connect_timeout_s: float = 3.0

    @property
    def resolved_model_cache_dir(self) -> Path:
        if self.model_cache_dir is not None:
            return self.model_cache_dir
        xdg = os.environ.get("XDG_CACHE_HOME")
        return (Path(xdg) if xdg else Path.home() / ".cache") / "tsmindex" / "models"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'tsmindex.db').resolve()}"

    @model_validator(mode="after")
    def _int8_needs_its_model(self) -> Settings:
        if self.inference_precision == "int8" and self.int8_model_path is None:
            raise ValueError("TSMINDEX_INFERENCE_PRECISION=int8 needs TSMINDEX_INT8_MODEL_PATH")
        return self

    @model_validator(mode="after")
    def _secrets_outside_embedded(self) -> Settings:
        if self.mode is Mode.platform:
            missing = [
                name
                for name in ("api_keys_pepper",)
                if getattr(self, name) is None or not getattr(self, name).get_secret_value()
            ]
            if missing:
                raise ValueError(
                    "platform mode needs these secrets set: "
                    + ", ".join(f"TSMINDEX_{n.upper()}" for n in missing)
                )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
