"""``tsmindex bench faults``: the reliability report (fault scenarios and uploads under load)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from workers.cli.app import bench_app


@bench_app.command("faults")
def bench_faults_cmd(
    fault: Annotated[
        list[str] | None, typer.Option("--fault", help="scenarios to run (default: all); repeatable")
    ] = None,
    load: Annotated[
        list[str] | None,
        typer.Option("--load", help="UPLOADS@IN_FLIGHT (default: 500@64 and 256@256); repeatable"),
    ] = None,
    no_load: Annotated[bool, typer.Option("--no-load", help="Skip the load test.")] = False,
    no_faults: Annotated[bool, typer.Option("--no-faults", help="Only the load test.")] = False,
    model_outage_s: Annotated[float, typer.Option(help="How long TorchServe stays stopped.")] = 90.0,
    fast_recovery: Annotated[
        bool, typer.Option(help="The test suite's short leases and reaper interval, not the defaults.")
    ] = False,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("bench-results/faults"),
) -> None:
    """Start a private platform of real processes, kill, stop and flush its parts mid-job, load its
    API with uploads; print what was lost, duplicated and how long recovery took; save faults.json."""
    from workers.benchmarks.faults import FaultBenchConfig, run_fault_bench
    from workers.benchmarks.harness.scenarios import SCENARIOS

    unknown = set(fault or ()) - set(SCENARIOS)
    if unknown:
        raise typer.BadParameter(f"unknown fault(s) {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    loads = () if no_load else tuple(_parse_load(spec) for spec in load or ("500@64", "256@256"))
    cfg = FaultBenchConfig(
        out_dir=out,
        faults=() if no_faults else tuple(fault or SCENARIOS),
        loads=loads,
        model_outage_s=model_outage_s,
        fast_recovery=fast_recovery,
    )
    console = Console()
    report = run_fault_bench(cfg, progress=lambda line: console.print(line, markup=False, highlight=False))
    for table in render_tables(report):
        console.print(table)
    typer.echo(f"-> {out / 'faults.json'}")


def _parse_load(spec: str) -> tuple[int, int]:
    try:
        uploads, in_flight = (int(part) for part in spec.split("@"))
    except ValueError:
        raise typer.BadParameter(f"--load takes UPLOADS@IN_FLIGHT, not {spec!r}") from None
    return uploads, in_flight


def render_tables(report: dict[str, Any]) -> list[Table]:
    faults = Table(title="faults (every job must end succeeded or failed for a permanent reason)")
    for column in ("fault", "jobs", "succeeded", "lost", "duplicated", "no webhook", "recovery s"):
        faults.add_column(column, justify="left" if column == "fault" else "right")
    for f in report["faults"]:
        recovery = "never" if f["recovery_s"] is None else f"{f['recovery_s']:.1f}"
        faults.add_row(
            f["fault"],
            *(str(f[k]) for k in ("jobs", "succeeded", "lost", "duplicated", "unnotified")),
            recovery,
        )
    loads = Table(title="uploads under load (503 with Retry-After is retried by the client)")
    columns = ("uploads", "in flight", "accepted", "5xx", "no answer", "503s", "p50 accept s", "p99 accept s")
    for column in (*columns, "indexed", "lost", "duplicated", "videos/s"):
        loads.add_column(column, justify="right")
    for x in report["loads"]:
        loads.add_row(
            *(
                str(x[k])
                for k in (
                    "uploads",
                    "in_flight",
                    "accepted",
                    "server_errors",
                    "transport_errors",
                    "busy_503",
                    "accept_p50_s",
                )
            ),
            *(str(x[k]) for k in ("accept_p99_s", "indexed", "lost", "duplicated", "videos_per_s")),
        )
    return [t for t, rows in ((faults, report["faults"]), (loads, report["loads"])) if rows]
