"""`tsmindex bench decode`: targeted decoding vs naive full decode on generated clips."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workers.cli.app import bench_app


@bench_app.command("decode")
def bench_decode(
    workdir: Annotated[Path, typer.Option(help="Where generated videos are cached between runs.")] = Path(
        "var/bench/decode"
    ),
    out: Annotated[Path, typer.Option(help="JSON file for the figures.")] = Path("bench-results/decode.json"),
    repeats: Annotated[int, typer.Option(min=1, help="Runs per side and video; the median is reported.")] = 3,
    video: Annotated[
        list[str] | None, typer.Option(help="Only these videos (repeatable), e.g. 1080p-60s.")
    ] = None,
) -> None:
    """Median time per video for ours vs naive full decode, frames decoded, and an exactness check."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from workers.benchmarks.decode import BENCH_VIDEOS, run, write_json

    chosen = [v for v in BENCH_VIDEOS if not video or v.name in video]
    unknown = set(video or ()) - {v.name for v in BENCH_VIDEOS}
    if unknown:
        raise typer.BadParameter(
            f"unknown video(s) {sorted(unknown)}; choose from {[v.name for v in BENCH_VIDEOS]}"
        )
    console = Console()
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("decode bench", total=None)
        rows = run(
            workdir=workdir, videos=chosen, repeats=repeats, on_step=lambda s: bar.update(task, description=s)
        )

    table = Table(title=f"decode: ours vs naive full decode (1 thread, median of {repeats})")
    for column in (
        "video",
        "codec",
        "frames",
        "clips",
        "ours ms",
        "ms/clip",
        "naive ms",
        "speed-up",
        "decoded ours",
        "decoded naive",
        "seeks",
        "exact",
    ):
        table.add_column(column, justify="left" if column in ("video", "codec") else "right")
    for row in rows:
        table.add_row(
            row.video,
            row.codec,
            str(row.frames),
            str(row.clips),
            f"{row.ours_ms:.0f}",
            f"{row.ours_ms_per_clip:.0f}",
            f"{row.naive_ms:.0f}",
            f"{row.speedup:.1f}x",
            str(row.ours_frames_decoded),
            str(row.naive_frames_decoded),
            str(row.seeks),
            "yes" if row.frames_exact else "NO",
        )
    console.print(table)
    write_json(rows, out, repeats=repeats)
    console.print(f"saved {out}")
    if not all(row.frames_exact for row in rows):
        raise typer.Exit(code=1)
