"""``tsmindex backfill s3://bucket/prefix``: list a prefix into index jobs in this process, then
follow the workers until every job has finished.

The lister runs here rather than in a worker so that an operator sees it and can stop it: a killed
or interrupted backfill is resumed by running the same command again (or ``--resume ID``)."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from services.api.schemas import BackfillRequest
from workers.cli.app import app
from workers.cli.remote import backfill_table, remote_client, run_backfill

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from services.core.backfills import BackfillCounts, BackfillRunner
    from services.core.config import Settings

console = Console()


@app.command("backfill")
def backfill_cmd(
    uri: Annotated[str | None, typer.Argument(help="s3://bucket/prefix to index")] = None,
    resume: Annotated[str | None, typer.Option(help="resume the backfill with this id")] = None,
    ext: Annotated[
        list[str] | None,
        typer.Option("--ext", help="index keys with this extension (repeat; default: videos)"),
    ] = None,
    all_extensions: Annotated[bool, typer.Option(help="index every key whatever its extension")] = False,
    min_size: Annotated[int, typer.Option(help="skip objects smaller than this (bytes)")] = 1,
    max_size: Annotated[int | None, typer.Option(help="skip objects larger than this (bytes)")] = None,
    modified_since: Annotated[
        datetime | None, typer.Option(help="skip objects last modified before this (UTC unless given)")
    ] = None,
    window_s: Annotated[float | None, typer.Option(help="window length in seconds")] = None,
    top_k: Annotated[int | None, typer.Option(help="labels kept per video and per window")] = None,
    output: Annotated[
        str | None, typer.Option(help="s3://bucket/prefix: one JSON Lines object per video when done")
    ] = None,
    new: Annotated[
        bool, typer.Option(help="start afresh even if this prefix has an interrupted backfill")
    ] = False,
    wait: Annotated[bool, typer.Option(help="after listing, follow the jobs until all have finished")] = True,
    model: Annotated[
        str | None, typer.Option(help="a served model, NAME or NAME:VERSION (default: the served default)")
    ] = None,
) -> None:
    """Index every object under an S3 prefix: one idempotent job per object, resumable, throttled."""
    from services.core import backfills, served
    from services.core.config import get_settings
    from services.core.db import db_engine, session_factory
    from services.core.indexing.options import IndexOptions
    from services.core.models import Backfill
    from services.core.queue import create_producer
    from services.core.versions import ModelVersionError

    if (uri is None) == (resume is None):
        console.print("[red]give either s3://bucket/prefix or --resume ID[/red]")
        raise typer.Exit(2)
    if (client := remote_client()) is not None:
        if uri is None:
            console.print(
                "[red]--api: the platform resumes its backfills itself; give s3://bucket/prefix[/red]"
            )
            raise typer.Exit(2)
        request = BackfillRequest(
            source_uri=uri,
            extensions=ext,
            all_extensions=all_extensions,
            min_size=min_size,
            max_size=max_size,
            modified_since=modified_since,
            output_uri=output,
            window_s=window_s,
            top_k=top_k,
            model=model,
        )
        with client:
            remote = run_backfill(client, request, wait=wait)
        console.print(backfill_table(remote))
        raise typer.Exit(1 if remote.status in ("failed", "cancelled") else 0)
    settings = get_settings()
    filters = backfills.BackfillFilters(
        extensions=None
        if all_extensions
        else tuple(e.lower().lstrip(".") for e in ext)
        if ext
        else backfills.VIDEO_EXTENSIONS,
        min_size=min_size,
        max_size=max_size,
        modified_since=backfills.as_utc(modified_since) if modified_since else None,
    )
    options = IndexOptions(window_s=window_s, top_k=top_k).to_job_options()
    engine = db_engine(settings)
    sessions = session_factory(engine)
    producer = create_producer(settings)
    try:
        with sessions.begin() as session:
            row: Backfill | None
            if resume is not None:
                row = session.get(Backfill, uuid.UUID(resume))
                if row is None:
                    console.print(f"[red]no backfill {resume}[/red]")
                    raise typer.Exit(2)
            else:
                assert uri is not None
                try:
                    # The version the model server serves, whatever this shell's environment says.
                    served_model = served.resolve(session, settings, model)
                    row = (
                        None
                        if new
                        else backfills.find_interrupted(
                            session, settings, source_uri=uri, filters=filters, model=served_model
                        )
                    )
                    if row is None:
                        row = backfills.create_backfill(
                            session,
                            settings,
                            source_uri=uri,
                            filters=filters,
                            options=options,
                            output_uri=output,
                            model=served_model,
                        )
                except (backfills.BackfillError, served.ModelNotServedError, ModelVersionError) as exc:
                    console.print(f"[red]{exc}[/red]")
                    raise typer.Exit(2) from exc
            backfill_id, source_uri, cursor, output_uri = (
                row.id,
                row.source_uri,
                row.cursor_key,
                row.output_uri,
            )
            indexed_by = f"{row.model_name}:{row.model_version}"
        where = f" (resuming after {cursor!r})" if cursor else ""
        console.print(f"backfill [bold]{backfill_id}[/bold] {source_uri} with {indexed_by}{where}")

        status, runner = follow(settings, sessions, producer, backfill_id, wait=wait)
        if output_uri is not None and status == backfills.BackfillStatus.completed:
            with console.status(f"writing results to {output_uri}"):
                written = backfills.export_results(sessions, runner.s3, backfill_id)
            console.print(f"wrote {written} JSON Lines objects under {output_uri}")
        if status in (backfills.BackfillStatus.failed, backfills.BackfillStatus.cancelled):
            raise typer.Exit(1)
    finally:
        producer.close()
        engine.dispose()


def follow(
    settings: Settings, sessions: sessionmaker[Session], producer: Any, backfill_id: uuid.UUID, *, wait: bool
) -> tuple[str, BackfillRunner]:
    """List a backfill (or reindex) in this process with a progress bar, then (with ``wait``) follow
    its jobs until all have finished; prints the summary and returns the final status."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from services.core import backfills
    from services.core.models import Backfill

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "listed {task.fields[listed]} · skipped {task.fields[skipped]} · failed {task.fields[failed]}"
        ),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task("listing", total=None, listed=0, skipped=0, failed=0)

        def show(counts: BackfillCounts) -> None:
            progress.update(
                bar,
                total=max(counts.queued, 1),
                completed=counts.succeeded + counts.failed,
                listed=counts.listed,
                skipped=counts.skipped,
                failed=counts.failed,
            )

        started = time.monotonic()
        runner = backfills.build_runner(settings, sessions, producer=producer, on_progress=show)
        if runner.run(backfill_id) is backfills.RunOutcome.busy:
            console.print(f"[red]backfill {backfill_id} is being listed by another process[/red]")
            raise typer.Exit(3)
        listed_s = time.monotonic() - started
        progress.update(bar, description="indexing")
        while True:
            with sessions.begin() as session:
                finished = backfills.finished_jobs(session, backfill_id)
                by_reason, _ = backfills.failures(session, backfill_id, limit=0)
                row = session.get_one(Backfill, backfill_id, with_for_update=True)
                counts = backfills.refresh(session, row, finished)
                status, reason = row.status, row.reason
            show(counts)
            if not wait or status not in backfills.ACTIVE:
                break
            time.sleep(settings.backfill_poll_s)
        total_s = time.monotonic() - started
    console.print(_summary(str(backfill_id), status, counts, by_reason, listed_s=listed_s, total_s=total_s))
    if status == backfills.BackfillStatus.failed:
        console.print(f"[red]listing failed: {reason}[/red]")
    return status, runner


def _summary(
    backfill_id: str,
    status: str,
    counts: BackfillCounts,
    by_reason: dict[str, int],
    *,
    listed_s: float,
    total_s: float,
) -> Table:
    table = Table(title=f"Backfill {status}", caption=backfill_id)
    table.add_column("")
    table.add_column("objects", justify="right")
    table.add_row("listed", str(counts.listed))
    table.add_row("skipped", str(counts.skipped))
    table.add_row("queued", str(counts.queued))
    table.add_row("succeeded", str(counts.succeeded))
    table.add_row("failed", str(counts.failed), end_section=not by_reason)
    for i, (reason, n) in enumerate(sorted(by_reason.items())):
        table.add_row(f"  {reason}", str(n), end_section=i == len(by_reason) - 1)
    table.add_row("listing (this process)", f"{listed_s:.1f} s")
    table.add_row("until done (this process)", f"{total_s:.1f} s")
    return table
