"""The CLI against a remote platform: which API (``--api`` or TSMINDEX_API_URL) and its client.

Commands that have a remote meaning ask ``remote_client()``; None means they work on the local
database as before."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from workers.cli.app import options

if TYPE_CHECKING:
    from services.api.schemas import BackfillOut, BackfillRequest, JobOut, LabelOut
    from services.client import TsmindexClient
    from services.core.indexing.options import IndexOptions
    from services.core.search import PageRequest

err = Console(stderr=True)


def api_url() -> str | None:
    """``--api`` of this command line, else TSMINDEX_API_URL."""
    if options.api_url:
        return options.api_url
    from services.core.config import get_settings

    return get_settings().api_url


def remote_client() -> TsmindexClient | None:
    """A client of the remote API, or None when the CLI works on the local database."""
    url = api_url()
    if url is None:
        return None
    from services.client import TsmindexClient
    from services.core.config import get_settings

    settings = get_settings()
    if settings.api_key is None:
        err.print(f"[red]--api {url}: set TSMINDEX_API_KEY to an API key of that platform[/red]")
        raise typer.Exit(2)
    return TsmindexClient(url, settings.api_key.get_secret_value(), timeout_s=settings.io_timeout_s)


def local_only(command: str) -> None:
    """Refuse a command that only works on the local database when ``--api`` is given."""
    if api_url() is not None:
        err.print(f"[red]`tsmindex {command}` works on this machine's database; it has no --api form[/red]")
        raise typer.Exit(2)


@contextmanager
def api_errors() -> Iterator[None]:
    """An API error or an unreachable API ends the command with its message, not a traceback."""
    from services.client import ClientError

    try:
        yield
    except ClientError as exc:
        err.print(f"[red]{exc}[/red]", soft_wrap=True)
        raise typer.Exit(1) from exc


def upload_and_wait(
    client: TsmindexClient, files: list[Path], options: IndexOptions, *, model: str | None, wait: bool
) -> list[tuple[Path, JobOut]]:
    """Upload each file with a progress bar, then (with ``wait``) follow its job until it ends."""
    from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

    jobs: list[tuple[Path, JobOut]] = []
    with api_errors(), Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn()) as bars:
        for path in files:
            bar = bars.add_task(f"upload {path.name}", total=path.stat().st_size)

            def sent(done: int, _total: int, bar: TaskID = bar) -> None:
                bars.update(bar, completed=done)

            jobs.append((path, client.upload(path, options=options, model=model, on_progress=sent)))
    if not wait:
        return jobs
    with api_errors(), Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()) as bars:
        overall = bars.add_task("indexing", total=len(jobs))
        done = []
        for path, job in jobs:
            done.append((path, client.wait(job.id, poll_s=0.5)))
            bars.advance(overall)
    return done


def jobs_table(jobs: list[tuple[str, JobOut]], top_labels: Callable[[JobOut], list[LabelOut]]) -> Table:
    """One row per job: what it indexed, its state, and the video's top labels once it succeeded."""
    table = Table(title="Jobs")
    for column in ("video", "job", "model", "status", "top labels"):
        table.add_column(column)
    for name, job in jobs:
        labels = top_labels(job) if job.status == "succeeded" else []
        status = job.status if job.reason is None else f"{job.status}: {job.reason}"
        if job.duplicate:
            status += " (already submitted)"
        if job.truncated:
            status += f" (truncated: {job.covered_s or 0:.0f} s covered)"
        shown = ", ".join(f"{x.label} {x.score:.3f}" for x in labels[:5])
        table.add_row(name, str(job.id), f"{job.model.name}:{job.model.version}", status, shown)
    return table


def remote_labels(client: TsmindexClient) -> Callable[[JobOut], list[LabelOut]]:
    """A job's video-level labels as the API serves them."""

    def labels(job: JobOut) -> list[LabelOut]:
        with api_errors():
            return client.video(job.video_id, model_version=job.model.version).labels

    return labels


def search_columns(*, moments: bool, several: bool) -> list[str]:
    """The columns of ``tsmindex search`` (a label column only when several labels were asked)."""
    label = ["label"] if several else []
    if moments:
        return ["score", *label, "video", "from", "to", "model", "moment"]
    return ["peak", "mean", *label, "video", "duration", "id"]


def search_rows(client: TsmindexClient, page: PageRequest, *, moments: bool) -> list[list[str]]:
    """The rows ``tsmindex search`` prints (see ``search_columns``), read from the API."""
    several = len(page.labels) > 1
    labels = list(page.labels)
    start_s = None if page.start_ms is None else page.start_ms / 1000
    end_s = None if page.end_ms is None else page.end_ms / 1000
    model = page.model_name
    if model is not None and page.model_version is not None:
        model = f"{model}:{page.model_version}"
    with api_errors():
        if moments:
            return [
                [
                    f"{m.score:.3f}",
                    *([m.label] if several else []),
                    m.filename or "-",
                    f"{m.start_ms / 1000:.1f} s",
                    f"{m.end_ms / 1000:.1f} s",
                    f"{m.model.name}:{m.model.version}",
                    str(m.id),
                ]
                for m in client.moments(
                    labels,
                    min_score=page.min_score,
                    limit=page.limit,
                    match=page.match,
                    start_s=start_s,
                    end_s=end_s,
                    model=model,
                ).items
            ]
        return [
            [
                f"{h.peak_score:.3f}",
                f"{h.score:.3f}",
                *([h.label] if several else []),
                h.filename or "-",
                f"{h.duration_s:.1f} s" if h.duration_s is not None else "-",
                str(h.video_id),
            ]
            for h in client.search(
                labels,
                min_score=page.min_score,
                limit=page.limit,
                match=page.match,
                sort=page.sort,
                model=model,
            ).items
        ]


def run_backfill(client: TsmindexClient, request: BackfillRequest, *, wait: bool) -> BackfillOut:
    """Start a backfill on the platform (its workers list the prefix) and follow its counts."""
    with api_errors():
        row = client.start_backfill(request)
    return _follow(client, row, wait=wait)


def run_reindex(client: TsmindexClient, model: str, where: dict[str, str], *, wait: bool) -> BackfillOut:
    """Start a reindex on the platform (its workers list the videos) and follow its counts."""
    from services.api.schemas import ReindexRequest

    with api_errors():
        row = client.reindex(ReindexRequest(model=model, where=where))
    return _follow(client, row, wait=wait)


def _follow(client: TsmindexClient, row: BackfillOut, *, wait: bool) -> BackfillOut:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with api_errors():
        err.print(
            f"[bold]{row.id}[/bold] {row.source_uri} with {row.model.name}:{row.model.version} on {api_url()}"
        )
        if not wait:
            return row
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("listed {task.fields[listed]} · skipped {task.fields[skipped]}"),
            TimeElapsedColumn(),
            console=err,
        ) as bars:
            bar = bars.add_task("indexing", total=None, listed=0, skipped=0)

            def show(b: BackfillOut) -> None:
                c = b.counts
                bars.update(
                    bar,
                    total=max(c.queued, 1),
                    completed=c.succeeded + c.failed,
                    listed=c.listed,
                    skipped=c.skipped,
                )

            return client.wait_backfill(row.id, poll_s=0.5, on_update=show)


def backfill_table(row: BackfillOut) -> Table:
    table = Table(title=f"Backfill {row.status}", caption=str(row.id))
    table.add_column("")
    table.add_column("objects", justify="right")
    counts = row.counts
    for name in ("listed", "skipped", "queued", "succeeded"):
        table.add_row(name, str(getattr(counts, name)))
    table.add_row("failed", str(counts.failed), end_section=True)
    for reason, n in sorted(row.failures_by_reason.items()):
        table.add_row(f"  {reason}", str(n))
    return table
