"""The reliability report: every fault scenario of the fault suite and the upload load test, run on
one private platform of real processes (workers/benchmarks/harness), with the product's default
recovery settings unless told otherwise. The model server outage is a real stop of TorchServe."""

from __future__ import annotations

import json
import platform as host
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.benchmarks.harness import scenarios
from workers.benchmarks.harness.clips import ClipMaker
from workers.benchmarks.harness.load import LoadResult, run_load
from workers.benchmarks.harness.platform import Platform, build_motion_archive, start_model_server


@dataclass(frozen=True)
class FaultBenchConfig:
    out_dir: Path
    faults: tuple[str, ...] = tuple(scenarios.SCENARIOS)
    loads: tuple[tuple[int, int], ...] = ((500, 64), (256, 256))  # (uploads, in flight)
    model_outage_s: float = 90.0
    fast_recovery: bool = False  # the test suite's short leases instead of the defaults


def _scenario_kwargs(name: str, cfg: FaultBenchConfig) -> dict[str, Any]:
    if name == "model_server_down":
        return {"outage_s": cfg.model_outage_s, "real_stop": True}
    return {}


def run_fault_bench(cfg: FaultBenchConfig, *, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the scenarios and the loads; returns the report (also saved as faults.json)."""
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "machine": {"platform": host.platform(), "python": host.python_version()},
        "config": {
            "faults": list(cfg.faults),
            "loads": [list(load) for load in cfg.loads],
            "model_outage_s": cfg.model_outage_s,
            "fast_recovery": cfg.fast_recovery,
        },
        "faults": [],
        "loads": [],
    }
    with tempfile.TemporaryDirectory(prefix="tsmindex-faults-") as tmp:
        base = Path(tmp)
        archive = build_motion_archive(base / "model-store")
        model_server = start_model_server(archive, base / "torchserve")
        platform = Platform(base / "platform", model_server, archive, fast=cfg.fast_recovery)
        clips = ClipMaker(base / "clips")
        try:
            platform.start()
            for name in cfg.faults:
                progress(f"fault: {name}")
                platform.ensure_running()
                result = scenarios.SCENARIOS[name](platform, clips, **_scenario_kwargs(name, cfg))
                report["faults"].append(_fault_entry(result))
                progress(f"  {result.describe()}")
            for uploads, in_flight in cfg.loads:
                progress(f"load: {uploads} uploads at {in_flight} in flight")
                platform.ensure_running()
                batch = [clips.make(1) for _ in range(uploads)]
                load = run_load(platform, batch, in_flight=in_flight, timeout_s=900)
                report["loads"].append(_load_entry(load))
                progress(f"  {load.describe()}")
        finally:
            platform.close()
            model_server.stop()
    report["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (cfg.out_dir / "faults.json").write_text(json.dumps(report, indent=2))
    return report


def _fault_entry(result: scenarios.FaultResult) -> dict[str, Any]:
    return {
        "fault": result.fault,
        "jobs": result.jobs,
        "succeeded": result.succeeded,
        "lost": len(result.lost),
        "duplicated": len(result.duplicated),
        "unnotified": len(result.unnotified),
        "recovery_s": result.recovery_s,
        "jobs_final": {j: [s.status, s.reason, s.attempts] for j, s in result.states.items()},
    }


def _load_entry(load: LoadResult) -> dict[str, Any]:
    return {
        "uploads": load.uploads,
        "in_flight": load.in_flight,
        "accepted": load.accepted,
        "server_errors": load.server_errors,
        "transport_errors": load.transport_errors,
        "busy_503": load.busy,
        "other_status": load.other,
        "accept_p50_s": round(load.percentile(0.5), 3),
        "accept_p99_s": round(load.percentile(0.99), 3),
        "submit_s": round(load.submit_s, 1),
        "total_s": round(load.total_s, 1),
        "indexed": load.succeeded,
        "lost": load.lost,
        "duplicated": load.duplicated,
        "videos_per_s": round(load.videos_per_s, 2),
    }
