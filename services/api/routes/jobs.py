"""Jobs: one job's state, and the jobs newest first (e.g. the failed ones, by reason)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from sqlalchemy import Select, and_, or_, select

from services.api.deps import SessionDep, invalid_cursor
from services.api.guard import ReadDep
from services.api.schemas import NOT_FOUND, JobOut, JobPage, ModelRef
from services.core import search
from services.core.models import Job, JobStatus
from services.core.tenancy import get_owned, scoped

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
        covered_s=job.covered_s,
        truncated=job.truncated,
        next_attempt_at=job.next_attempt_at if job.status == JobStatus.queued else None,
        sampling=job.sampling,
        shortfall_frames=job.shortfall_frames,
        shortfall_windows=job.shortfall_windows,
        decode_fallback=job.decode_fallback,
        duplicate=duplicate,
    )


@router.get("/{job_id}", responses=NOT_FOUND)
def get_job(job_id: uuid.UUID, session: SessionDep, caller: ReadDep) -> JobOut:
    job = get_owned(session, Job, job_id, caller.sees)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such job")
    return job_out(job)


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        created_at, job_id = search.decode_cursor(cursor, 2)
        return datetime.fromisoformat(created_at), uuid.UUID(str(job_id))
    except (ValueError, TypeError) as exc:
        raise invalid_cursor(cursor) from exc


def jobs_query(
    status_: str | None,
    reason: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
    tenant_id: uuid.UUID | None = None,
) -> Select[tuple[Job]]:
    """Jobs newest first (keyset pages on created_at, id), served by the jobs' listing indexes."""
    query = scoped(select(Job), Job.tenant_id, tenant_id)
    if status_ is not None:
        query = query.where(Job.status == status_)
    if reason is not None:
        query = query.where(Job.reason == reason)
    if after is not None:
        created_at, job_id = after
        query = query.where(
            or_(Job.created_at < created_at, and_(Job.created_at == created_at, Job.id < job_id))
        )
    return query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)


@router.get("")
def list_jobs(
    session: SessionDep,
    caller: ReadDep,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    reason: Annotated[str | None, Query(max_length=64, description="a failure reason, e.g. corrupt")] = None,
    cursor: Annotated[str | None, Query(max_length=200, description="the last `next_cursor`")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobPage:
    """Jobs newest first, optionally only those with a `status` (and a failure `reason`)."""
    after = _decode_cursor(cursor) if cursor is not None else None
    jobs = session.scalars(jobs_query(status_, reason, after, limit + 1, caller.sees)).all()
    return JobPage(
        items=[job_out(job) for job in jobs[:limit]],
        next_cursor=(
            search.encode_cursor([jobs[limit - 1].created_at.isoformat(), str(jobs[limit - 1].id)])
            if len(jobs) > limit
            else None
        ),
    )
