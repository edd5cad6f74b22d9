"""The reaper wired to this process's database and broker: a loop thread in every worker's main
process, and ``tsmindex reaper`` (see ``services.core.indexing.reaper`` for what a pass does)."""

from __future__ import annotations

from typing import Any

from services.core.config import Settings
from services.core.db import db_engine, session_factory
from services.core.indexing.reaper import ReaperThread, ReapReport, Scope, reap_once


def reaper_pass(settings: Settings, *, producer: Any, scope: Scope | None = None) -> Any:
    """A function that runs one reaper pass on its own engine and broker connection."""
    import redis

    from services.core.queue import enqueue_backfill, enqueue_index_video, index_queue_length

    sessions = session_factory(db_engine(settings))
    broker = redis.Redis.from_url(settings.redis_url, socket_timeout=settings.io_timeout_s)

    def run() -> ReapReport | None:
        return reap_once(
            sessions,
            settings,
            send_job=lambda job_id: enqueue_index_video(producer, job_id),
            send_backfill=lambda backfill_id: enqueue_backfill(producer, backfill_id),
            queue_length=lambda: index_queue_length(broker),
            scope=scope,
        )

    return run


def start_reaper(settings: Settings, *, producer: Any) -> ReaperThread:
    thread = ReaperThread(reaper_pass(settings, producer=producer), settings.reaper_interval_s)
    thread.start()
    return thread
