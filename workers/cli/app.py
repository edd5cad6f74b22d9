"""The typer apps that command modules attach to."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="tsmindex",
    help="Batch video indexing with the Temporal Shift Module.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
bench_app = typer.Typer(help="Benchmarks that print a table and save JSON (and plots).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def main() -> None:
    from workers.allocator import apply_thread_policy, reexec_with_allocator_env

    reexec_with_allocator_env()  # before torch allocates anything
    apply_thread_policy()  # before torch loads OpenMP
    import workers.cli  # noqa: F401  (registers every command module)

    app()
