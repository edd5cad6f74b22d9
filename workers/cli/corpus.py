"""`tsmindex corpus`: the real sample videos that tests and benchmarks run on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workers.cli.app import app

corpus_app = typer.Typer(help="Real sample videos from Debian and PyPI packages.", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")

CorpusDirOpt = Annotated[
    Path | None, typer.Option("--dir", help="cache folder (default: TSMINDEX_CORPUS_DIR)", file_okay=False)
]


def corpus_dir(directory: Path | None) -> Path:
    from services.core.config import get_settings

    return directory or get_settings().corpus_dir


@corpus_app.command("fetch")
def fetch_cmd(directory: CorpusDirOpt = None) -> None:
    """Download the packages named in the manifest, check every file's SHA-256, cache them."""
    from rich.console import Console
    from rich.table import Table

    from workers.media.corpus import CorpusError, fetch

    console = Console()
    target = corpus_dir(directory)
    try:
        with console.status("fetching the corpus") as status:
            files = fetch(target, on_step=lambda message: status.update(message))
    except CorpusError as exc:
        Console(stderr=True).print(f"[red]corpus fetch failed: {exc}[/red]")
        raise typer.Exit(1) from exc
    table = Table(title=f"corpus in {target}")
    for column in ("file", "what", "from"):
        table.add_column(column)
    for item in files:
        table.add_row(item.name, item.kind, item.origin)
    console.print(table)
