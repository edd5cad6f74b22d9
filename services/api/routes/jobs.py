"""Job status."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, HTTPException, status

from services.api.deps import ApiKeyDep, SessionDep
from services.api.schemas import JobOut, ModelRef
from services.core.models import Job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def job_out(job: Job, *, duplicate: bool = False) -> JobOut:
    return JobOut(
        id=job.id,
        video_id=job.video_id,
        status=job.status,
        reason=job.reason,
        detail=job.detail,
        attempts=job.attempts,
        progress=job.progress,
        model=ModelRef(name=job.model_name, version=job.model_version),
        options=job.options,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        duplicate=duplicate,
    )


@router.get("/{job_id}")
def get_job(job_id: uuid.UUID, session: SessionDep, _key: ApiKeyDep) -> JobOut:
    job = session.get(Job, job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such job")
    return job_out(job)
