"""What a run reads from the job and video rows when it claims the job (then no row is held)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from services.core.config import Settings
from services.core.indexing.options import IndexOptions, ResolvedOptions
from services.core.models import Job, Video
from services.core.served import Preprocessing
from services.core.versions import ModelVersion


@dataclass(frozen=True)
class JobSnapshot:
    job_id: uuid.UUID
    video_id: uuid.UUID
    owner: str  # the lease owner token of this run
    model_name: str
    model_version: str
    options: ResolvedOptions
    storage_key: str | None
    source_uri: str | None
    sha256: str | None
    created_at: datetime
    preprocessing: Preprocessing  # how the job's model wants its clips (its registry row)

    @property
    def model(self) -> ModelVersion:
        return ModelVersion(self.model_name, self.model_version)

    @classmethod
    def of(
        cls, job: Job, video: Video, *, owner: str, settings: Settings, preprocessing: Preprocessing
    ) -> JobSnapshot:
        return cls(
            job_id=job.id,
            video_id=video.id,
            owner=owner,
            model_name=job.model_name,
            model_version=job.model_version,
            options=IndexOptions.from_job_options(job.options or {}).resolve(settings),
            storage_key=video.storage_key,
            source_uri=video.source_uri,
            sha256=video.sha256,
            created_at=job.created_at,
            preprocessing=preprocessing,
        )
