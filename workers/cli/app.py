"""The typer apps that command modules attach to, and the options every command shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer

app = typer.Typer(
    name="tsmindex",
    help="Batch video indexing with the Temporal Shift Module.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
bench_app = typer.Typer(help="Benchmarks that print a table and save JSON (and plots).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@dataclass
class GlobalOptions:
    """The options given before the command (one command line per process)."""

    api_url: str | None = None


options = GlobalOptions()


@app.callback()
def root(
    api: Annotated[
        str | None,
        typer.Option(
            "--api",
            metavar="URL",
            help="drive the platform at URL through its HTTP API (index, job, search, backfill, "
            "compare) instead of the local database; default TSMINDEX_API_URL, key TSMINDEX_API_KEY",
        ),
    ] = None,
) -> None:
    options.api_url = api


def main() -> None:
    from workers.allocator import apply_thread_policy, reexec_with_allocator_env

    reexec_with_allocator_env()  # before torch allocates anything
    apply_thread_policy()  # before torch loads OpenMP
    import workers.cli  # noqa: F401  (registers every command module)

    app()
