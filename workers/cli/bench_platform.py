"""`tsmindex bench platform`: pipeline clips/s against the bound set by bare decode and inference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from workers.cli.app import bench_app


@bench_app.command("platform")
def bench_platform(
    out: Annotated[Path, typer.Option(help="Directory for platform.json.")] = Path("bench-results"),
    video: Annotated[
        list[str] | None, typer.Option(help="Generated videos (`tsmindex bench decode` names), repeatable.")
    ] = None,
    work_dir: Annotated[Path, typer.Option(help="Where generated videos are kept.")] = Path(
        "var/bench/decode"
    ),
    arch: Annotated[str, typer.Option(help="Backbone served (random weights).")] = "resnet50",
    batch_size: Annotated[int, typer.Option(min=1, help="TorchServe batch size.")] = 8,
    window_s: Annotated[float, typer.Option(help="Seconds per clip window.")] = 10.0,
    database_url: Annotated[str | None, typer.Option(help="Default: a temporary SQLite file.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Jobs run at once (a worker's concurrency).")] = 2,
) -> None:
    """Generated videos through fetch, streamed decode + TorchServe inference and store; prints
    videos/s, clips/s, the stage split, batch fill and the ratio to the slower of bare decode and
    bare inference, all measured in this run."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from workers.benchmarks.decode import BENCH_VIDEOS
    from workers.benchmarks.platform import PlatformBenchConfig, run

    known = [v.name for v in BENCH_VIDEOS]
    if set(video or ()) - set(known):
        raise typer.BadParameter(f"unknown video(s); choose from {known}")
    config = PlatformBenchConfig(
        work_dir=work_dir,
        arch=arch,
        batch_size=batch_size,
        window_s=window_s,
        database_url=database_url,
        workers=workers,
    )
    if video:
        config = PlatformBenchConfig(**{**config.__dict__, "videos": tuple(video)})
    console = Console()
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("platform bench", total=None)
        results = run(config, lambda step: bar.update(task, description=step))
    bare, pipe = results["bare"], results["pipeline"]
    table = Table(title=f"{len(results['videos'])} videos, {bare['clips']} clips, {arch}, batch {batch_size}")
    for column in ("measure", "value"):
        table.add_column(column, justify="right")
    rows = [
        ("bare decode clips/s", f"{bare['decode_clips_per_s']:.2f}"),
        (
            "bare inference clips/s",
            f"{bare['inference_clips_per_s']:.2f} (fill {bare['inference_batch_fill']:.0%})",
        ),
        ("bound clips/s", f"{results['bound']['clips_per_s']:.2f} (set by {results['bound']['set_by']})"),
        ("pipeline videos/s", f"{pipe['videos_per_s']:.3f} ({pipe['succeeded']}/{pipe['videos']} succeeded)"),
        ("pipeline clips/s", f"{pipe['clips_per_s']:.2f}"),
        ("pipeline batch fill", f"{pipe['batch_fill']:.0%}"),
        ("ratio to the bound", f"{results['ratio_to_bound']:.0%}"),
        ("shared-cores bound clips/s", f"{results['shared_cores_bound_clips_per_s']:.2f}"),
        ("ratio to the shared-cores bound", f"{results['ratio_to_shared_cores_bound']:.0%}"),
        *((f"stage {s} s", f"{v:.1f}") for s, v in pipe["stage_s"].items()),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "platform.json").write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"saved {out / 'platform.json'}")
