"""``tsmindex status``: the dashboard's headline figures in the terminal.

Live figures come from Prometheus's HTTP API (the same series the dashboard plots); totals come from
the database. Either source may be down: the table says which figures it could not read.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from workers.cli.app import app

console = Console()

WINDOW = "5m"


@dataclass(frozen=True)
class Figure:
    name: str
    value: str
    source: str


def _fmt_seconds(v: float) -> str:
    if v < 1:
        return f"{v * 1000:.0f} ms"
    if v < 120:
        return f"{v:.1f} s"
    return f"{v / 60:.1f} min"


def _fmt_number(v: float) -> str:
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.3g}"


def _fmt_ratio(v: float) -> str:
    return f"{v * 100:.1f} %"


def _fmt_bytes(v: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(v) < 1024 or unit == "GiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    raise AssertionError("unreachable")


# (figure, PromQL, label that names each series or None for one value, formatter)
PROMETHEUS_FIGURES: tuple[tuple[str, str, str | None, Callable[[float], str]], ...] = (
    ("videos indexed / s", f"sum(rate(tsmindex_videos_indexed_total[{WINDOW}]))", None, lambda v: f"{v:.3g}"),
    ("clips inferred / s", f"sum(rate(tsmindex_clips_inferred_total[{WINDOW}]))", None, lambda v: f"{v:.3g}"),
    (
        "videos indexed since start",
        "sum by (outcome) (tsmindex_videos_indexed_total)",
        "outcome",
        _fmt_number,
    ),
    (
        "failed share",
        f'sum(rate(tsmindex_videos_indexed_total{{outcome="failed"}}[{WINDOW}]))'
        f" / clamp_min(sum(rate(tsmindex_videos_indexed_total[{WINDOW}])), 1e-9)",
        None,
        _fmt_ratio,
    ),
    *(
        (
            f"end-to-end latency p{q}",
            f"histogram_quantile(0.{q}, sum by (le) (rate(tsmindex_index_latency_seconds_bucket[{WINDOW}])))",
            None,
            _fmt_seconds,
        )
        for q in (50, 95, 99)
    ),
    (
        "stage latency p95",
        "histogram_quantile(0.95, sum by (stage, le)"
        f" (rate(tsmindex_stage_duration_seconds_bucket[{WINDOW}])))",
        "stage",
        _fmt_seconds,
    ),
    (
        "clips per TorchServe batch",
        f"sum(rate(tsmindex_handler_batch_size_sum[{WINDOW}]))"
        f" / clamp_min(sum(rate(tsmindex_handler_batch_size_count[{WINDOW}])), 1e-9)",
        None,
        lambda v: f"{v:.2f}",
    ),
    ("queue depth", "max by (queue) (tsmindex_queue_depth)", "queue", _fmt_number),
    ("jobs in flight", "sum(tsmindex_jobs_in_flight)", None, _fmt_number),
    ("job errors since start", "sum by (reason) (tsmindex_job_errors_total)", "reason", _fmt_number),
    ("uploaded since start", "sum(tsmindex_uploaded_bytes_total)", None, _fmt_bytes),
    ("targets up", 'up{job=~"tsmindex-api|tsmindex-worker|torchserve"}', "job", _fmt_number),
)


def prometheus_figures(url: str, *, timeout_s: float = 5.0) -> list[Figure]:
    """Evaluate the headline expressions now; raises ``httpx.HTTPError`` when Prometheus is unreachable."""
    import httpx

    figures: list[Figure] = []
    with httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s) as client:
        for name, expr, label, fmt in PROMETHEUS_FIGURES:
            response = client.get("/api/v1/query", params={"query": expr})
            response.raise_for_status()
            series: list[dict[str, Any]] = response.json()["data"]["result"]
            if not series:
                figures.append(Figure(name, "no data", "prometheus"))
                continue
            for s in sorted(series, key=lambda s: str(s["metric"].get(label or "", ""))):
                value = float(s["value"][1])
                shown = "no data" if math.isnan(value) else fmt(value)
                suffix = f" ({s['metric'].get(label, '')})" if label else ""
                figures.append(Figure(name + suffix, shown, "prometheus"))
    return figures


def database_figures(database_url: str) -> list[Figure]:
    """Job counts by status (and deferred), videos (and damaged ones), the active backfills."""
    from sqlalchemy import func, select

    from services.core.db import create_db_engine, session_factory
    from services.core.metrics import ACTIVE_BACKFILL_STATUSES
    from services.core.models import Backfill, Job, SourceObject, Video

    engine = create_db_engine(database_url)
    try:
        with session_factory(engine)() as session:
            by_status = {
                str(status): int(count)
                for status, count in session.execute(
                    select(Job.status, func.count()).group_by(Job.status)
                ).tuples()
            }
            videos = session.execute(select(func.count()).select_from(Video)).scalar_one()
            deferred = session.execute(
                select(func.count()).where(Job.status == "queued", Job.next_attempt_at.is_not(None))
            ).scalar_one()
            damaged, missing_frames = session.execute(
                select(func.count(), func.coalesce(func.sum(Job.shortfall_frames), 0)).where(
                    Job.shortfall_frames > 0
                )
            ).one()
            active = session.execute(
                select(Backfill.id, Backfill.source_uri, Backfill.status, Backfill.jobs_created)
                .where(Backfill.status.in_(ACTIVE_BACKFILL_STATUSES))
                .order_by(Backfill.created_at)
            ).all()
            progress = []
            for backfill_id, uri, status, created in active:
                done = session.execute(
                    select(func.count())
                    .select_from(SourceObject)
                    .join(Job, Job.id == SourceObject.job_id)
                    .where(
                        SourceObject.backfill_id == backfill_id,
                        SourceObject.outcome == "queued",
                        Job.status.in_(("succeeded", "failed")),
                    )
                ).scalar_one()
                progress.append((uri, status, done, created))
    finally:
        engine.dispose()
    figures = [
        Figure(f"jobs {status}", str(by_status.get(status, 0)), "database")
        for status in ("queued", "running", "succeeded", "failed")
    ]
    figures.append(Figure("jobs deferred (waiting out an outage)", str(deferred), "database"))
    figures.append(Figure("videos", str(videos), "database"))
    figures.append(
        Figure("videos with frames that did not decode", f"{damaged} ({missing_frames} frames)", "database")
    )
    figures.append(Figure("backfills active", str(len(active)), "database"))
    figures += [
        Figure(f"backfill {uri} ({status})", f"{done} / {created} jobs done", "database")
        for uri, status, done, created in progress
    ]
    return figures


@app.command("status")
def status_cmd(
    prometheus_url: Annotated[str | None, typer.Option(help="default TSMINDEX_PROMETHEUS_URL")] = None,
) -> None:
    """Headline figures of the platform: throughput, latency, batch fill, queue, errors, backfills."""
    import httpx

    from services.core.config import get_settings

    settings = get_settings()
    url = prometheus_url or settings.prometheus_url
    figures: list[Figure] = []
    unreachable: list[str] = []
    try:
        figures += prometheus_figures(url)
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        unreachable.append(f"Prometheus at {url}: {exc}")
    try:
        figures += database_figures(settings.resolved_database_url)
    except Exception as exc:  # any database failure: report it next to what Prometheus gave
        unreachable.append(f"database: {type(exc).__name__}: {exc}"[:300])

    table = Table(title="tsmindex status")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("source")
    for f in figures:
        table.add_row(f.name, f.value, f.source)
    if figures:
        console.print(table)
    for line in unreachable:
        console.print(f"[yellow]not read: {line}[/yellow]")
    if not figures:
        raise typer.Exit(1)
