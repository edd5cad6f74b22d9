"""``tsmindex bench online``: online vs offline labels, lag after each change, latency per frame."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from workers.cli.app import bench_app


@bench_app.command("online")
def bench_online_cmd(
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="known models or checkpoint paths (default: both motion models)"),
    ] = None,
    reference: Annotated[
        str, typer.Option(help="the offline model the archive is indexed with")
    ] = "tsm-motion-mnv2-32px",
    paths: Annotated[int, typer.Option(help="generated shots")] = 4,
    legs: Annotated[int, typer.Option(help="straight legs (directions) per shot")] = 12,
    seed: Annotated[int, typer.Option(help="seed of the shots")] = 7,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("bench-results/online"),
) -> None:
    """Run models through `tsmindex watch`'s code on motion that changes direction; score them against
    the truth and the offline bi-directional model; save online.json."""
    from workers.benchmarks.online import OnlineBenchConfig, run_online_bench
    from workers.cli.models import fetch_model

    def local(spec: str) -> str:
        return spec if Path(spec).is_file() else str(fetch_model(spec))

    names = model or ["tsm-motion-mnv2-32px", "tsm-motion-mnv2-32px-online"]
    cfg = OnlineBenchConfig(
        out_dir=str(out),
        models=tuple(local(m) for m in names),
        reference=local(reference),
        paths=paths,
        legs=legs,
        seed=seed,
    )
    report = run_online_bench(cfg)
    Console().print(render_table(report))
    typer.echo(f"-> {out / 'online.json'}")


def render_table(report: dict[str, Any]) -> Table:
    cfg = report["config"]
    table = Table(
        title=f"{cfg['paths']} shots x {cfg['legs'] - 1} changes of direction, {cfg['size']} px, "
        f"{cfg['fps']} fps; {report['machine']['torch_threads']} torch thread(s)"
    )
    columns = ("model", "run", "clean accuracy", "agrees with offline: all / clean frames")
    for column in (*columns, "lag median / max", "never settled", "latency p50 / p95", "CPU p50"):
        table.add_column(column, justify="left" if column in ("model", "run") else "right")

    def row(entry: dict[str, Any], run: str, agreement: str) -> None:
        latency, cpu = entry.get("latency_ms"), entry.get("cpu_ms")
        table.add_row(
            entry["model"],
            run,
            f"{entry['clean_accuracy']:.1%}",
            agreement,
            f"{entry['lag_median_frames']} / {entry['lag_max_frames']} frames",
            f"{entry['never_settled']} of {entry['changes']}",
            f"{latency['p50']:.1f} / {latency['p95']:.1f} ms" if latency else "-",
            f"{cpu['p50']:.1f} ms" if cpu else "-",
        )

    row(report["offline_reference"], "offline, last T frames", "-")
    for entry in report["models"]:
        agreement = f"{entry['agreement_with_offline']:.1%} / {entry['clean_agreement_with_offline']:.1%}"
        row(entry, f"online ({entry['shift']}-directional)", agreement)
    return table
