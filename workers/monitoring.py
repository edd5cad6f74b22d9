"""The Celery worker's Prometheus exporter (port ``TSMINDEX_WORKER_METRICS_PORT``, 9101 by default).

Prefork children cannot each serve a port, so every process writes its metrics to files in
``PROMETHEUS_MULTIPROC_DIR`` and the main process serves their sum. The directory must be set before
``prometheus_client`` is imported (``tsmindex worker`` sets a default). At worker start the main process
deletes files left by earlier runs; live gauges of children that died (even by SIGKILL, which runs no
shutdown hook) are dropped before every scrape. Importing this module connects the Celery signals.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from celery import signals
from prometheus_client import CollectorRegistry, start_http_server, values
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from services.core import metrics
from services.core.config import get_settings

log = logging.getLogger(__name__)

_PID_FILE = re.compile(r"_(\d+)\.db$")
_server: Any = None


def multiprocess_enabled() -> bool:
    """Whether this process's metric values live in the shared directory (chosen at import)."""
    return bool(os.environ.get(metrics.MULTIPROC_ENV)) and values.ValueClass is not values.MutexValue


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _file_pids(path: Path) -> set[int]:
    return {int(m.group(1)) for f in path.glob("*.db") if (m := _PID_FILE.search(f.name))}


def remove_stale_files(path: Path, *, keep_pid: int) -> int:
    """Delete every metrics file not written by ``keep_pid`` (called before any child exists)."""
    removed = 0
    for f in path.glob("*.db"):
        m = _PID_FILE.search(f.name)
        if m is None or int(m.group(1)) != keep_pid:
            f.unlink(missing_ok=True)
            removed += 1
    return removed


class WorkerCollector(Collector):
    """All worker processes' metrics, after dropping the live gauges of processes that are gone."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._merged = MultiProcessCollector(None, path=str(path))  # type: ignore[no-untyped-call]

    def collect(self) -> Iterator[Metric]:
        for pid in _file_pids(self._path):
            if not _pid_alive(pid):
                mark_process_dead(pid, str(self._path))  # type: ignore[no-untyped-call]
        merged: Iterator[Metric] = self._merged.collect()  # type: ignore[no-untyped-call]
        return merged


def start_exporter(port: int, host: str, path: Path) -> Any:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(path))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server


@signals.worker_init.connect  # type: ignore[untyped-decorator]
def _start_exporter(**_: Any) -> None:
    """In the worker's main process, before the pool forks its children."""
    global _server
    settings = get_settings()
    if settings.worker_metrics_port == 0:
        return
    if not multiprocess_enabled():
        log.warning(
            "worker metrics are off: set %s before the worker starts (tsmindex worker sets a default)",
            metrics.MULTIPROC_ENV,
        )
        return
    path = Path(os.environ[metrics.MULTIPROC_ENV])
    path.mkdir(parents=True, exist_ok=True)
    remove_stale_files(path, keep_pid=os.getpid())
    try:
        _server = start_exporter(settings.worker_metrics_port, settings.worker_metrics_host, path)
    except OSError as exc:  # a second worker on the same host: it still works, unobserved
        log.error("worker metrics exporter not started on port %d: %s", settings.worker_metrics_port, exc)
        return
    log.info(
        "worker metrics on http://%s:%d/metrics", settings.worker_metrics_host, settings.worker_metrics_port
    )


@signals.worker_process_init.connect  # type: ignore[untyped-decorator]
def _init_child(**_: Any) -> None:
    metrics.init_series()


@signals.worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _child_exits(**_: Any) -> None:
    if multiprocess_enabled():
        mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


@signals.worker_shutdown.connect  # type: ignore[untyped-decorator]
def _stop_exporter(**_: Any) -> None:
    global _server
    if _server is not None:
        _server.shutdown()
        _server.server_close()
        _server = None
