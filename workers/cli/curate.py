"""``tsmindex make-dataset from-index``: the index's moments of some labels as a training set, closing
the loop index -> curate -> fine-tune (`tsmindex train`) -> reindex."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from workers.cli.remote import local_only
from workers.cli.training import make_dataset_app

console = Console()


@make_dataset_app.command("from-index")
def from_index_cmd(
    out: Annotated[Path, typer.Argument(help="folder to write <label>/*.mp4 and labels.csv into")],
    label: Annotated[list[str], typer.Option(help="a label whose moments to keep (repeat)")],
    min_score: Annotated[float, typer.Option(min=0.0, max=1.0, help="the moment's best window score")] = 0.5,
    model: Annotated[str | None, typer.Option(help="only this version, NAME:VERSION")] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="keep at most this many moments (best first)")
    ] = None,
    short_side: Annotated[int, typer.Option(min=16, help="clips are scaled to this shorter side (px)")] = 256,
) -> None:
    """Write the indexed moments of --label (scoring at least --min-score) as clips and a labels.csv
    that `tsmindex train` reads."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from services.core.config import get_settings
    from services.core.db import create_db_engine, session_factory
    from services.core.versions import ModelVersion, ModelVersionError
    from workers.training.from_index import find_moments, write_dataset

    local_only("make-dataset from-index")
    try:
        version = ModelVersion.parse(model) if model else None
    except ModelVersionError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    settings = get_settings()
    engine = create_db_engine(settings.resolved_database_url)
    try:
        with session_factory(engine)() as session:
            moments = find_moments(session, labels=label, min_score=min_score, model=version, limit=limit)
    finally:
        engine.dispose()
    if not moments:
        console.print(f"[yellow]no moment of {', '.join(label)} scores {min_score} or more[/yellow]")
        raise typer.Exit(1)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
    ) as bars:
        task = bars.add_task("moments", total=len(moments))
        csv_path, written = write_dataset(
            settings, moments, out, short_side=short_side, on_video=lambda n: bars.advance(task, n)
        )
    console.print(
        f"{written} clips of {len(moments)} moments -> {csv_path} (next: tsmindex train {csv_path})"
    )
