"""Every Prometheus metric of tsmindex, declared once (prefix ``tsmindex_``, base units).

Three sources feed Prometheus:

- the API process: upload counters plus ``PlatformCollector``, which reads the state every replica
  shares (Redis queue depth, jobs by status, backfill progress) at scrape time, so a gauge can never
  drift from the truth the job rows and the broker hold;
- every Celery worker process: pipeline counters and histograms. Prefork children write them to
  ``PROMETHEUS_MULTIPROC_DIR`` (set before ``prometheus_client`` is imported); the worker's main
  process merges them on its exporter port (``workers.monitoring``);
- TorchServe: its own metrics plus the handler's ``tsmindex_handler_*`` (declared in
  infra/torchserve/metrics.yaml, because TorchServe exports only metrics its config names).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, sessionmaker

from services.core.models import Backfill, Job, SourceObject

log = logging.getLogger(__name__)

STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
STAGES = ("fetch", "decode", "inference", "store")
OUTCOMES = ("succeeded", "failed")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

VIDEOS_INDEXED = Counter(
    "tsmindex_videos_indexed_total", "Index jobs finished, by outcome (succeeded/failed).", ["outcome"]
)
JOB_ERRORS = Counter("tsmindex_job_errors_total", "Index job errors, by reason.", ["reason"])
CLIPS_INFERRED = Counter("tsmindex_clips_inferred_total", "Clips classified by the workers.")
STAGE_SECONDS = Histogram(
    "tsmindex_stage_duration_seconds",
    "Time per pipeline stage (fetch, decode, inference, store).",
    ["stage"],
    buckets=STAGE_BUCKETS,
)
INDEX_LATENCY_SECONDS = Histogram(
    "tsmindex_index_latency_seconds",
    "End-to-end latency: upload accepted to labels stored.",
    buckets=STAGE_BUCKETS,
)
UPLOADED_BYTES = Counter("tsmindex_uploaded_bytes_total", "Video bytes accepted by the API.")
# livesum: the exporter adds up the processes still alive (a dead child's jobs are not in flight).
JOBS_IN_FLIGHT = Gauge(
    "tsmindex_jobs_in_flight",
    "Index jobs a worker process is running right now.",
    multiprocess_mode="livesum",
)

# Read at scrape time by PlatformCollector (names here so the dashboards test can see them).
QUEUE_DEPTH = "tsmindex_queue_depth"
QUEUE_UNACKED = "tsmindex_queue_unacked_messages"
JOBS = "tsmindex_jobs"
BACKFILLS = "tsmindex_backfills"
BACKFILL_JOBS = "tsmindex_backfill_jobs"
BACKFILL_OBJECTS_LISTED = "tsmindex_backfill_objects_listed"
BACKFILL_JOBS_CREATED = "tsmindex_backfill_jobs_created"
COLLECTOR_UP = "tsmindex_collector_up"

# Kombu's Redis transport keeps priorities 3/6/9 in sibling lists and reserved messages in a hash.
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)
_UNACKED_KEY = "unacked"
_LIVE_JOB_STATUSES = ("queued", "running")
_ALL_JOB_STATUSES = ("queued", "running", "succeeded", "failed")
# services.core.backfills.BackfillStatus: the statuses of a backfill still at work.
ACTIVE_BACKFILL_STATUSES = ("listing", "indexing")


def init_series() -> None:
    """Create every fixed-label series at 0, so rates start from a known zero, not from the first event."""
    for outcome in OUTCOMES:
        VIDEOS_INDEXED.labels(outcome).inc(0)
    for stage in STAGES:
        STAGE_SECONDS.labels(stage)
    CLIPS_INFERRED.inc(0)
    JOBS_IN_FLIGHT.inc(0)


class PlatformCollector(Collector):
    """Gauges of shared state, read from Redis and the database whenever Prometheus scrapes.

    Every replica reports the same values, so dashboards aggregate them with ``max``. A source that
    cannot be read is reported by ``tsmindex_collector_up{source}`` = 0 instead of failing the scrape.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        redis_url: str,
        *,
        queues: Sequence[str],
        timeout_s: float = 2.0,
    ) -> None:
        self._sessions = sessions
        self._redis_url = redis_url
        self._queues = tuple(queues)
        self._timeout_s = timeout_s

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        depth, unacked, jobs, backfills, backfill_jobs, listed, created, up = self._families()
        try:
            self._read_redis(depth, unacked)
            up.add_metric(["redis"], 1)
        except Exception as exc:  # a broker outage must not hide the other metrics
            log.warning("metrics: cannot read Redis: %s", exc)
            up.add_metric(["redis"], 0)
        try:
            self._read_database(jobs, backfills, backfill_jobs, listed, created)
            up.add_metric(["database"], 1)
        except Exception as exc:  # likewise for the database
            log.warning("metrics: cannot read the database: %s", exc)
            up.add_metric(["database"], 0)
        yield from (depth, unacked, jobs, backfills, backfill_jobs, listed, created, up)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily(QUEUE_DEPTH, "Messages waiting in the Celery queue.", labels=["queue"]),
            GaugeMetricFamily(QUEUE_UNACKED, "Messages delivered to a worker and not yet acknowledged."),
            GaugeMetricFamily(
                JOBS, "Index jobs not yet finished, by status (queued/running).", labels=["status"]
            ),
            GaugeMetricFamily(BACKFILLS, "S3 backfills, by status.", labels=["status"]),
            GaugeMetricFamily(
                BACKFILL_JOBS, "Jobs queued by the active backfills, by job status.", labels=["status"]
            ),
            GaugeMetricFamily(BACKFILL_OBJECTS_LISTED, "Objects the active backfills have listed so far."),
            GaugeMetricFamily(BACKFILL_JOBS_CREATED, "Index jobs the active backfills have queued so far."),
            GaugeMetricFamily(COLLECTOR_UP, "Whether a scrape-time source could be read.", labels=["source"]),
        )

    def _read_redis(self, depth: GaugeMetricFamily, unacked: GaugeMetricFamily) -> None:
        import redis

        client = redis.Redis.from_url(
            self._redis_url, socket_timeout=self._timeout_s, socket_connect_timeout=self._timeout_s
        )
        try:
            pipe = client.pipeline(transaction=False)
            for queue in self._queues:
                for key in (queue, *(f"{queue}{_PRIORITY_SEP}{step}" for step in _PRIORITY_STEPS)):
                    pipe.llen(key)
            pipe.hlen(_UNACKED_KEY)
            counts = pipe.execute()
        finally:
            client.close()
        per_queue = 1 + len(_PRIORITY_STEPS)
        for i, queue in enumerate(self._queues):
            depth.add_metric([queue], sum(counts[i * per_queue : (i + 1) * per_queue]))
        unacked.add_metric([], counts[-1])

    def _read_database(
        self,
        jobs: GaugeMetricFamily,
        backfills: GaugeMetricFamily,
        backfill_jobs: GaugeMetricFamily,
        listed: GaugeMetricFamily,
        created: GaugeMetricFamily,
    ) -> None:
        with self._sessions() as session:
            # Only unfinished statuses: counting finished jobs would scan millions of rows per scrape.
            live = _counts(
                session,
                select(Job.status, func.count())
                .where(Job.status.in_(_LIVE_JOB_STATUSES))
                .group_by(Job.status),
            )
            by_status = _counts(session, select(Backfill.status, func.count()).group_by(Backfill.status))
            active = Backfill.status.in_(ACTIVE_BACKFILL_STATUSES)
            of_active = _counts(
                session,
                select(Job.status, func.count())
                .join(SourceObject, SourceObject.job_id == Job.id)
                .join(Backfill, Backfill.id == SourceObject.backfill_id)
                .where(active, SourceObject.outcome == "queued")
                .group_by(Job.status),
            )
            objects, jobs_created = session.execute(
                select(
                    func.coalesce(func.sum(Backfill.objects_listed), 0),
                    func.coalesce(func.sum(Backfill.jobs_created), 0),
                ).where(active)
            ).one()
        for status in _LIVE_JOB_STATUSES:
            jobs.add_metric([status], live.get(status, 0))
        for status in sorted({*ACTIVE_BACKFILL_STATUSES, *by_status}):
            backfills.add_metric([status], by_status.get(status, 0))
        for status in _ALL_JOB_STATUSES:
            backfill_jobs.add_metric([status], of_active.get(status, 0))
        listed.add_metric([], float(objects))
        created.add_metric([], float(jobs_created))


def _counts(session: Session, stmt: Select[tuple[str, int]]) -> dict[str, int]:
    return {str(key): int(count) for key, count in session.execute(stmt).tuples().all()}


def process_registry() -> CollectorRegistry:
    """This process's metrics; all processes' metrics when ``PROMETHEUS_MULTIPROC_DIR`` is set."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


def exposition(*extra: CollectorRegistry) -> bytes:
    """Prometheus text for this process (or its siblings) followed by ``extra`` registries."""
    return b"".join(generate_latest(registry) for registry in (process_registry(), *extra))
