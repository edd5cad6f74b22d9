"""Model versions in the index: ``tsmindex models register ARCHIVE`` records what a model server
serves (submissions key their jobs by it), ``tsmindex models retire NAME:VERSION`` deletes one
version's labels, moments and jobs in batches (after a reindex to a newer version)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from workers.cli.models import models_app
from workers.cli.remote import local_only

console = Console()


@models_app.command("retire")
def retire_cmd(
    version: Annotated[str, typer.Argument(help="the version to delete, NAME:VERSION (e.g. tsm:1)")],
    batch_size: Annotated[int, typer.Option(min=1, help="rows deleted per transaction")] = 5000,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    force: Annotated[bool, typer.Option(help="even if it is the version the settings serve")] = False,
) -> None:
    """Delete a model version's labels, windows, moments and jobs from the index (batches, progress)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from services.core.config import get_settings
    from services.core.db import create_db_engine, session_factory
    from services.core.storage import make_storage
    from services.core.versions import ModelVersion, ModelVersionError, retire_version, version_rows

    local_only("models retire")
    try:
        model = ModelVersion.parse(version)
    except ModelVersionError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    settings = get_settings()
    if model == ModelVersion(settings.model_name, settings.model_version) and not force:
        console.print(f"[red]{model} is the version these settings serve; retire it with --force[/red]")
        raise typer.Exit(2)
    engine = create_db_engine(settings.resolved_database_url)
    sessions = session_factory(engine)
    try:
        with sessions() as session:
            rows = version_rows(session, model)
        if not any(rows.values()):
            console.print(f"[yellow]the index holds nothing of {model}[/yellow]")
            raise typer.Exit(1)
        console.print(_rows_table(f"{model} in the index", rows))
        if not yes and not typer.confirm(f"delete all of {model}?"):
            raise typer.Exit(1)
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
        ) as bars:
            tasks = {table: bars.add_task(table, total=n) for table, n in rows.items()}
            deleted = retire_version(
                sessions,
                model,
                batch_size=batch_size,
                on_batch=lambda table, n: bars.advance(tasks[table], n),
                storage=make_storage(settings),
            )
    finally:
        engine.dispose()
    console.print(_rows_table(f"{model} retired", deleted, column="deleted"))


@models_app.command("register")
def register_cmd(
    archive: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="the .mar TorchServe serves")],
) -> None:
    """Record that a model server serves ARCHIVE: API, CLI and backfills then submit under its name and
    version, and workers cut clips as its card says (run where TorchServe starts; stack.sh does)."""
    from services.core.config import get_settings
    from workers.served import register_archive

    local_only("models register")
    model = register_archive(get_settings(), archive)
    console.print(f"registered {model} as the served version of {model.name}")


def _rows_table(title: str, rows: dict[str, int], *, column: str = "rows") -> Table:
    table = Table(title=title)
    table.add_column("table")
    table.add_column(column, justify="right")
    for name, n in rows.items():
        table.add_row(name, str(n))
    return table
