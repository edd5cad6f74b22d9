"""``tsmindex reindex --model NAME:VERSION [--where KEY=VALUE ...]``: submit the indexed videos again
under another model version, listed, paced and resumed like a backfill; with --api, on a remote
platform (its workers list them)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from workers.cli.app import app
from workers.cli.backfill import follow
from workers.cli.remote import backfill_table, remote_client, run_reindex

console = Console()


@app.command("reindex")
def reindex_cmd(
    model: Annotated[str, typer.Option(help="the served version to index them with, NAME:VERSION")],
    where: Annotated[
        list[str] | None,
        typer.Option(
            help="select videos (repeat, all must hold): label=L, min_score=S, since=DATE, until=DATE, "
            "prefix=P (source URI or file name), from=NAME:VERSION (indexed by)"
        ),
    ] = None,
    new: Annotated[bool, typer.Option(help="start afresh even if the same reindex was interrupted")] = False,
    wait: Annotated[bool, typer.Option(help="after listing, follow the jobs until all have finished")] = True,
) -> None:
    """Index matching videos under another model version (old labels stay until `models retire`)."""
    from services.core import served
    from services.core.config import get_settings
    from services.core.db import create_db_engine, session_factory
    from services.core.queue import create_producer
    from services.core.reindex import (
        ReindexFilterError,
        ReindexFilters,
        create_reindex,
        find_interrupted_reindex,
    )
    from services.core.versions import ModelVersionError

    try:
        filters = ReindexFilters.parse(where or [])
    except ReindexFilterError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    if (client := remote_client()) is not None:
        with client:
            where_json = {k: str(v) for k, v in filters.to_dict().items() if v is not None}
            remote = run_reindex(client, model, where_json, wait=wait)
        console.print(backfill_table(remote))
        raise typer.Exit(1 if remote.status in ("failed", "cancelled") else 0)
    settings = get_settings()
    engine = create_db_engine(settings.resolved_database_url)
    sessions = session_factory(engine)
    producer = create_producer(settings)
    try:
        with sessions.begin() as session:
            try:
                version = served.resolve(session, settings, model)
            except (served.ModelNotServedError, ModelVersionError) as exc:
                console.print(f"[red]{exc}[/red]")
                raise typer.Exit(2) from exc
            row = None if new else find_interrupted_reindex(session, filters=filters, model=version)
            row = row or create_reindex(session, filters=filters, model=version)
            reindex_id, source, cursor = row.id, row.source_uri, row.cursor_key
        resuming = f" (resuming after video {cursor})" if cursor else ""
        console.print(f"reindex [bold]{reindex_id}[/bold] {source} to {version}{resuming}")
        status, _ = follow(settings, sessions, producer, reindex_id, wait=wait)
        if status in ("failed", "cancelled"):
            raise typer.Exit(1)
    finally:
        producer.close()
        engine.dispose()
