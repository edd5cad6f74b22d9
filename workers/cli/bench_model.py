"""`tsmindex bench model`: shift overhead (the paper's Fig. 2a), precision and allocator throughput."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workers.cli.app import bench_app


@bench_app.command("model")
def bench_model(
    out: Annotated[Path, typer.Option(help="Directory for model.json and model.png.")] = Path(
        "bench-results"
    ),
    arch: Annotated[str, typer.Option(help="Backbone.")] = "resnet50",
    segments: Annotated[int, typer.Option(min=1, help="Frames per clip.")] = 8,
    size: Annotated[int, typer.Option(min=32, help="Input height and width.")] = 224,
    repeats: Annotated[int, typer.Option(min=1, help="Rounds of the batch-1 measurements (median).")] = 5,
    batch: Annotated[int, typer.Option(min=1, help="Clips per batch for throughput.")] = 16,
    batch_repeats: Annotated[
        int, typer.Option(min=1, help="Rounds of the batch measurements (after a warm-up round).")
    ] = 2,
    sweep_precision: Annotated[
        str, typer.Option(help="Precision of the shift sweep: fp32 or bf16.")
    ] = "fp32",
    allocators: Annotated[bool, typer.Option(help="Compare malloc settings in subprocesses.")] = True,
    threads: Annotated[
        int | None, typer.Option(min=1, help="torch intra-op threads (default: one per core).")
    ] = None,
) -> None:
    """Latency overhead of the shift at proportions 0..1 (residual and in-place), batch-1 latency and
    batch throughput for fp32/bf16 with GFLOP/s, and allocator settings; all measured in this run."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from workers.benchmarks.model import ModelBenchConfig, run, write_results

    if sweep_precision not in ("fp32", "bf16"):
        raise typer.BadParameter("--sweep-precision must be fp32 or bf16")
    config = ModelBenchConfig(
        arch=arch,
        segments=segments,
        size=size,
        repeats=repeats,
        batch=batch,
        batch_repeats=batch_repeats,
        sweep_precision=sweep_precision,
        allocators=allocators,
        threads=threads,
    )
    console = Console()
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("model bench", total=None)
        results = run(config, lambda step: bar.update(task, description=step))

    sweep = results["shift_sweep"]
    table = Table(
        title=f"shift overhead vs no shift ({arch}, {segments}x{size}px, batch 1, {sweep['precision']}; "
        f"no shift: {sweep['no_shift_latency_s'] * 1000:.0f} ms, median of {repeats} interleaved rounds)"
    )
    for column in ("placement", "proportion", "shift_div", "latency ms", "overhead (wall)", "overhead (cpu)"):
        table.add_column(column, justify="right")
    for place, points in sweep["curves"].items():
        for p in points[1:]:
            table.add_row(
                place,
                p["label"],
                str(p["shift_div"]),
                f"{p['latency_s'] * 1000:.0f}",
                f"{100 * p['overhead_wall']:+.1f}%",
                f"{100 * p['overhead_cpu']:+.1f}%",
            )
    console.print(table)
    for precision, share in results["shift_share"].items():
        console.print(
            f"shift 1/4 residual, {precision}: {share['shifts_per_forward']} shifts take "
            f"{share['shift_s'] * 1000:.1f} ms of a {share['forward_s'] * 1000:.0f} ms forward "
            f"({100 * share['share']:.1f}%, median of {repeats} rounds)"
        )

    prec = results["precision"]
    table = Table(
        title=f"precision (TSM {arch}, shift 1/4 residual; {results['gflops_per_clip']:.1f} GFLOP/clip)"
    )
    for column in ("precision", "batch-1 ms", "batch-1 GFLOP/s", f"batch-{batch} videos/s", "GFLOP/s"):
        table.add_column(column, justify="right")
    for p in ("fp32", "bf16"):
        if p in prec:
            r = prec[p]
            table.add_row(
                p,
                f"{r['batch1_latency_s'] * 1000:.0f}",
                f"{r['batch1_gflops']:.0f}",
                f"{r['videos_per_s']:.2f}",
                f"{r['batch_gflops']:.0f}",
            )
    console.print(table)
    if "bf16_over_fp32_throughput" in prec:
        console.print(f"bf16 / fp32 throughput: {prec['bf16_over_fp32_throughput']:.2f}x")

    if "allocators" in results:
        alloc = results["allocators"]
        table = Table(title=f"allocators (batch {batch}, default precision, one subprocess each)")
        for column in ("allocator", "videos/s", "vs glibc default"):
            table.add_column(column, justify="right")
        for name, r in alloc["runs"].items():
            table.add_row(name, f"{r['videos_per_s']:.2f}", f"{r['throughput_vs_glibc_default']:.2f}x")
        console.print(table)
        console.print(f"fastest allocator setting: {alloc['best']}")

    json_path, png_path = write_results(results, out)
    console.print(f"saved {json_path} and {png_path}")
