"""The job queue as the API sees it: Celery on Redis, carrying job ids only.

The API publishes by task name and never imports the workers; ``workers.celery_app`` consumes with
the same configuration.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from services.core.config import Settings

INDEX_VIDEO_TASK = "workers.tasks.index_video"
BACKFILL_PREFIX_TASK = "workers.tasks.backfill_prefix"
INDEX_QUEUE = "index"


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.redis_url,
        "task_default_queue": INDEX_QUEUE,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,  # the job row is the result
        # Tasks are idempotent, so a message is acknowledged only once its job is done and one
        # whose worker died is redelivered.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": settings.job_time_limit_s,
        "task_soft_time_limit": max(settings.job_time_limit_s - 30.0, settings.job_time_limit_s * 0.9),
        # Redis redelivers an unacknowledged message after this long: it must exceed the longest job.
        "broker_transport_options": {"visibility_timeout": int(settings.job_time_limit_s * 2) + 60},
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": settings.io_timeout_s,
    }


def create_producer(settings: Settings) -> Celery:
    producer = Celery("tsmindex-api")
    producer.conf.update(celery_config(settings))
    return producer


def enqueue_index_video(producer: Celery, job_id: str) -> None:
    producer.send_task(INDEX_VIDEO_TASK, args=[job_id], queue=INDEX_QUEUE)


def enqueue_backfill(producer: Celery, backfill_id: str, *, countdown: float | None = None) -> None:
    producer.send_task(BACKFILL_PREFIX_TASK, args=[backfill_id], queue=INDEX_QUEUE, countdown=countdown)


def index_queue_length(client: Any) -> int:
    """Messages waiting on the index queue (``client``: a redis.Redis on the broker)."""
    return int(client.llen(INDEX_QUEUE))
