"""Celery tasks: thin wrappers that take ids and run the pipeline."""

from __future__ import annotations

from services.core import metrics
from services.core.config import get_settings
from workers import pipeline
from workers.celery_app import celery_app, worker_context


@celery_app.task(
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
