"""`tsmindex bench threads`: decode processes vs intra-op threads, and OMP_WAIT_POLICY."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from workers.cli.app import bench_app


@bench_app.command("threads")
def bench_threads(
    out: Annotated[Path, typer.Option(help="Directory for threads.json.")] = Path("bench-results"),
    seconds: Annotated[float, typer.Option(min=1.0, help="Measured interval per configuration.")] = 30.0,
    arch: Annotated[str, typer.Option(help="Backbone of the inference process.")] = "resnet50",
    size: Annotated[int, typer.Option(min=32, help="Clip side.")] = 224,
    batch: Annotated[int, typer.Option(min=1, help="Clips per inference batch.")] = 8,
    video: Annotated[
        str, typer.Option(help="Generated video (`tsmindex bench decode` names).")
    ] = "720p-gop30",
    work_dir: Annotated[Path, typer.Option(help="Where generated videos are kept.")] = Path(
        "var/bench/decode"
    ),
    config: Annotated[
        list[str] | None,
        typer.Option(help="DECODERS:THREADS:POLICY to measure (repeatable); default: a grid for this host."),
    ] = None,
) -> None:
    """Decode and inference side by side under each split of the cores; the pipeline runs at the
    slower of the two, so the best split is the one with the highest minimum."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from workers.benchmarks.threads import ThreadBenchConfig, ThreadConfig, run

    configs = None
    if config:
        try:
            configs = [ThreadConfig(int(p), int(k), w) for p, k, w in (c.split(":") for c in config)]
        except ValueError as exc:
            raise typer.BadParameter("--config is DECODERS:THREADS:POLICY, e.g. 1:2:passive") from exc
    bench = ThreadBenchConfig(
        seconds=seconds, arch=arch, size=size, batch=batch, video=video, work_dir=work_dir
    )
    console = Console()
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("threads bench", total=None)
        results = run(bench, lambda step: bar.update(task, description=step), configs)
    table = Table(
        title=f"{results['cores']} cores, {arch} {size}px batch {batch}, {video}, {seconds:g} s each"
    )
    for column in (
        "decode procs",
        "torch threads",
        "OMP_WAIT_POLICY",
        "decode clips/s",
        "infer clips/s",
        "min",
    ):
        table.add_column(column, justify="right")
    for row in results["rows"]:
        table.add_row(
            str(row["decoders"]),
            str(row["threads"]),
            row["wait_policy"],
            f"{row['decode_clips_per_s']:.2f}",
            f"{row['inference_clips_per_s']:.2f}",
            f"{row['pipeline_clips_per_s']:.2f}",
        )
    console.print(table)
    best = results["best"]
    console.print(f"best: {best['decoders']} decode x {best['threads']} threads, {best['wait_policy']}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "threads.json").write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"saved {out / 'threads.json'}")
