"""The Celery application of the indexing workers (``celery -A workers.celery_app worker``).

Each worker process builds its own database engine, storage client and inference backend in
``worker_process_init``: nothing opened before the fork is shared by the children. The main process
runs the reaper loop (``services.core.indexing.reaper``) once the worker is ready.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from services.core.config import get_settings
from services.core.queue import celery_config
from workers import monitoring  # noqa: F401  # connects the metrics exporter's signals
from workers.indexing.context import PipelineContext, build_context

celery_app = Celery("tsmindex", include=["workers.tasks"])
celery_app.conf.update(celery_config(get_settings()))
app = celery_app  # the name `celery -A workers.celery_app` looks for

_context: PipelineContext | None = None
_reaper: Any = None


@signals.worker_process_init.connect  # type: ignore[untyped-decorator]
def _open_process_context(**_: Any) -> None:
    global _context
    _context = build_context(get_settings())


@signals.worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _close_process_context(**_: Any) -> None:
    global _context
    if _context is not None:
        _context.close()
        _context = None


def worker_context() -> PipelineContext:
    """This process's pipeline context (built on first use by pools that do not fork)."""
    global _context
    if _context is None:
        _context = build_context(get_settings())
    return _context


@signals.worker_ready.connect  # type: ignore[untyped-decorator]
def _start_reaper(**_: Any) -> None:
    global _reaper
    from workers.reaping import start_reaper

    _reaper = start_reaper(get_settings(), producer=celery_app)


@signals.worker_shutdown.connect  # type: ignore[untyped-decorator]
def _stop_reaper(**_: Any) -> None:
    if _reaper is not None:
        _reaper.stop()
