"""Celery tasks: thin wrappers that take ids and run the pipeline."""

from __future__ import annotations

from services.core import metrics
from services.core.config import get_settings
from workers import pipeline
from workers.celery_app import celery_app, worker_context


@celery_app.task(  # type: ignore[untyped-decorator]
    name="workers.tasks.index_video",
    autoretry_for=(pipeline.TransientJobError,),
    retry_backoff=2,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=get_settings().job_max_attempts,
)
def index_video(job_id: str) -> str:
    """Index one video; the job row records the outcome, the return value is its status."""
    with metrics.JOBS_IN_FLIGHT.track_inprogress():
        return pipeline.index_video(job_id, worker_context()).status


@celery_app.task(name="workers.tasks.backfill_prefix")  # type: ignore[untyped-decorator]
def backfill_prefix(backfill_id: str) -> str:
    """List one backfill's prefix into index jobs, then export its results if it has an output
    prefix. It never waits while holding a worker slot: when the queue is at its cap, or its jobs
    are still running before an export, it schedules itself again and returns."""
    import uuid

    from services.core.backfill import advance, build_runner
    from services.core.queue import enqueue_backfill

    settings = get_settings()
    runner = build_runner(settings, worker_context().sessions, producer=celery_app)
    result, again = advance(runner, uuid.UUID(backfill_id))
    if again:
        enqueue_backfill(celery_app, backfill_id, countdown=settings.backfill_poll_s * 5)
    return result
