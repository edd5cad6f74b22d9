"""Celery tasks: thin wrappers that take ids and run the pipeline.

``index_video`` is idempotent (the job's lease decides who runs it), so it is acknowledged late and
rejected back to the queue when its worker is lost. While the model server is down this process
takes no job (the breaker); when the database is down the task retries with backoff. A message
that is lost or dropped is not a lost job: the reaper sends the job again.
"""

from __future__ import annotations

import random

from celery import Task

from services.core import metrics
from services.core.config import get_settings
from services.core.indexing.errors import DatabaseUnavailableError
from workers.celery_app import celery_app, worker_context
from workers.indexing.run import run_job

BREAKER_WAIT_S = 60.0  # how long a delivery waits for the model server before leaving the job queued
RETRY_CAP_S = 60.0  # longest wait between two tries while the database is down


@celery_app.task(  # type: ignore[untyped-decorator]
    name="workers.tasks.index_video",
    bind=True,
    max_retries=None,  # the job's deadline bounds it, not a count
    acks_late=True,
    reject_on_worker_lost=True,
)
def index_video(self: Task, job_id: str, previous_owner: str | None = None) -> str:
    """Index one video; the job row records the outcome, the return value is its status.

    The lease owner is this try of the message (``hostname:task id:retries``): a redelivery after
    the worker was lost finds its own lease and counts the lost run. A retry after a database outage
    names the try it follows (``previous_owner``) and takes that lease over without counting one."""
    ctx = worker_context()
    if ctx.breaker is not None and not ctx.breaker.wait_closed(BREAKER_WAIT_S):
        return "breaker_open"  # the job stays queued: the reaper sends it again
    owner = f"{self.request.hostname}:{self.request.id}:{self.request.retries}"
    with metrics.JOBS_IN_FLIGHT.track_inprogress():
        try:
            return run_job(job_id, ctx, owner=owner, previous_owner=previous_owner).status
        except DatabaseUnavailableError as exc:
            countdown = min(RETRY_CAP_S, 2.0 ** (self.request.retries + 1)) * random.uniform(0.5, 1.0)
            raise self.retry(exc=exc, countdown=countdown, kwargs={"previous_owner": owner}) from exc


@celery_app.task(name="workers.tasks.backfill_prefix")  # type: ignore[untyped-decorator]
def backfill_prefix(backfill_id: str) -> str:
    """List one backfill's prefix into index jobs, then export its results if it has an output
    prefix. It never waits while holding a worker slot: when the queue is at its cap, or its jobs
    are still running before an export, it schedules itself again and returns."""
    import uuid

    from services.core.backfills import advance, build_runner
    from services.core.queue import enqueue_backfill

    settings = get_settings()
    runner = build_runner(settings, worker_context().sessions, producer=celery_app)
    result, again = advance(runner, uuid.UUID(backfill_id))
    if again:
        enqueue_backfill(celery_app, backfill_id, countdown=settings.backfill_poll_s * 5)
    return result
