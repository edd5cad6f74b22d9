"""`tsmindex bench int8`: int8 label agreement on the motion evaluation set and speed against bf16."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from workers.cli.app import bench_app


@bench_app.command("int8")
def bench_int8(
    out: Annotated[Path, typer.Option(help="Directory for int8.json.")] = Path("bench-results"),
    data_dir: Annotated[Path, typer.Option(help="Where the motion splits are generated (kept).")] = Path(
        "var/bench/int8"
    ),
    eval_clips: Annotated[int, typer.Option(min=4, help="Held-out motion clips (seed 2).")] = 400,
    calibration_clips: Annotated[int, typer.Option(min=1, help="Motion training clips (seed 1).")] = 64,
    arch: Annotated[str, typer.Option(help="Backbone timed for speed.")] = "resnet50",
    size: Annotated[
        int, typer.Option(min=32, help="Input side timed for speed (224 needs 9+ GB to calibrate).")
    ] = 112,
    batch: Annotated[int, typer.Option(min=1, help="Clips per timed batch.")] = 8,
    rounds: Annotated[int, typer.Option(min=1, help="Timed rounds (after a warm-up).")] = 3,
) -> None:
    """Top-1 agreement of the int8 shipped motion model with its fp32 self, and clips/s of ResNet-50
    at fp32, bf16, ONNX Runtime fp32 and int8, all measured in this run."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from workers.benchmarks.int8 import Int8BenchConfig, run

    config = Int8BenchConfig(
        data_dir=data_dir,
        calibration_clips=calibration_clips,
        eval_clips=eval_clips,
        arch=arch,
        size=size,
        batch=batch,
        rounds=rounds,
    )
    console = Console()
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("int8 bench", total=None)
        results = run(config, lambda step: bar.update(task, description=step))

    agree = results["agreement"]
    table = Table(title=f"{agree['model']}: int8 vs fp32 on {agree['clips']} held-out motion clips")
    for column in ("measure", "value"):
        table.add_column(column, justify="right")
    for key, value in agree.items():
        if isinstance(value, float):
            table.add_row(key, f"{value:.2%}" if key != "max_abs_prob_diff" else f"{value:.4f}")
    console.print(table)
    table = Table(
        title=f"{arch} {results['config']['segments']}x{size}, batch {batch}, median of {rounds} rounds"
    )
    table.add_column("path")
    table.add_column("clips/s", justify="right")
    for name, run_ in results["speed"]["runs"].items():
        table.add_row(name, f"{run_['clips_per_s']:.2f}")
    console.print(table)
    for name, ratio in results["speed"]["speedup"].items():
        console.print(f"{name}: {ratio:.2f}x")
    out.mkdir(parents=True, exist_ok=True)
    (out / "int8.json").write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"saved {out / 'int8.json'}")
