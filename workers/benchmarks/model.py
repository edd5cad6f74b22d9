"""``tsmindex bench model``: the TSM paper's Figure 2a on this machine, throughput, and allocators.

1. Shift overhead (Fig. 2a): batch-1 latency of the network at shift proportions 0, 1/8, 1/4, 1/2
   and 1 (2 * fold / C), residual ("blockres") and in-place ("block") placement. Every config is
   timed once per round, in rotating order, so drift and other load hit all of them alike; the
   overhead is the median over rounds of (config / no-shift network in the same round) - 1.
   The shift's share of a forward, timed on the inputs one forward gave each shift, is reported
   beside it: a reading of the same cost with far less noise.
2. Precision: batch-1 latency and batch-B videos/s for fp32 and bf16 autocast (interleaved),
   with achieved GFLOP/s from FLOPs counted by ``torch.utils.flop_counter``.
3. Allocators: the batch-B measurement in fresh subprocesses, one per allocator setting (glibc
   default, glibc without mmap/trim, jemalloc/tcmalloc where installed), reported as ratios to the
   glibc default.

Wall time is what a user waits for; process CPU time is reported beside it because it is less
sensitive to other processes sharing the cores.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from workers.allocator import GLIBC_NO_TRIM

# (label, proportion of channels shifted = 2 * fold / C, shift_div); 1 shifts half each way.
PROPORTIONS: tuple[tuple[str, float, int], ...] = (
    ("0", 0.0, 0),
    ("1/8", 0.125, 16),
    ("1/4", 0.25, 8),
    ("1/2", 0.5, 4),
    ("1", 1.0, 2),
)
PLACES: tuple[tuple[str, str], ...] = (("residual", "blockres"), ("in-place", "block"))

_MALLOC_VARS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX", "LD_PRELOAD")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ModelBenchConfig:
    arch: str = "resnet50"
    segments: int = 8
    size: int = 224
    repeats: int = 5  # rounds of the batch-1 measurements
    batch: int = 16
    batch_repeats: int = 2  # rounds of the batch-B measurements (after one warm-up round)
    sweep_precision: str = "fp32"
    allocators: bool = True
    threads: int | None = None  # torch intra-op threads; None = torch's default (one per core)


@dataclass(frozen=True)
class Timing:
    wall_s: float  # median
    cpu_s: float  # median process CPU time (all threads)


def _median_timing(walls: list[float], cpus: list[float]) -> Timing:
    return Timing(wall_s=statistics.median(walls), cpu_s=statistics.median(cpus))


def _clip_batch(batch: int, config: ModelBenchConfig) -> Any:
    import torch

    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, config.segments, 3, config.size, config.size, generator=gen)


def _runner(config: ModelBenchConfig, *, shift_div: int, place: str, precision: str) -> Any:
    import torch

    from model_store.tsm import build_tsm, prepare_for_inference

    torch.manual_seed(0)
    model = build_tsm(
        config.arch, num_classes=400, num_segments=config.segments, shift_div=shift_div, shift_place=place
    )
    return prepare_for_inference(model, device="cpu", precision=precision)


def _set_threads(config: ModelBenchConfig) -> None:
    import torch

    if config.threads is not None:
        torch.set_num_threads(config.threads)


def _interleaved(
    runners: dict[str, Any], x: Any, rounds: int, progress: Progress, what: str
) -> dict[str, tuple[list[float], list[float]]]:
    """(wall times, CPU times) per runner; one call each per round, order rotated every round."""
    names = list(runners)
    out: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in names}
    for name in names:  # warm-up: oneDNN builds its kernels on the first call per shape
        progress(f"{what}: warm-up {name}")
        runners[name](x)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            progress(f"{what}: round {r + 1}/{rounds}, {name}")
            wall, cpu = time.perf_counter(), time.process_time()
            runners[name](x)
            out[name][0].append(time.perf_counter() - wall)
            out[name][1].append(time.process_time() - cpu)
    return out


def shift_sweep(config: ModelBenchConfig, progress: Progress) -> dict[str, Any]:
    """Figure 2a: latency overhead of each shift proportion and placement over no shift."""
    runners = {"none": _runner(config, shift_div=0, place="blockres", precision=config.sweep_precision)}
    for place_label, place in PLACES:
        for label, _, div in PROPORTIONS[1:]:
            progress(f"building {place_label} {label}")
            runners[f"{place_label} {label}"] = _runner(
                config, shift_div=div, place=place, precision=config.sweep_precision
            )
    times = _interleaved(runners, _clip_batch(1, config), config.repeats, progress, "shift sweep")
    base_wall, base_cpu = times["none"]

    def overhead(name: str, base: list[float], index: int) -> float:
        ratios = [t / b for t, b in zip(times[name][index], base, strict=True)]
        return statistics.median(ratios) - 1.0

    curves: dict[str, list[dict[str, Any]]] = {}
    for place_label, _ in PLACES:
        points = [{"proportion": 0.0, "label": "0", "overhead_wall": 0.0, "overhead_cpu": 0.0}]
        for label, proportion, div in PROPORTIONS[1:]:
            name = f"{place_label} {label}"
            timing = _median_timing(*times[name])
            points.append(
                {
                    "proportion": proportion,
                    "label": label,
                    "shift_div": div,
                    "latency_s": timing.wall_s,
                    "cpu_s": timing.cpu_s,
                    "overhead_wall": overhead(name, base_wall, 0),
                    "overhead_cpu": overhead(name, base_cpu, 1),
                }
            )
        curves[place_label] = points
    base = _median_timing(base_wall, base_cpu)
    return {
        "precision": config.sweep_precision,
        "batch": 1,
        "no_shift_latency_s": base.wall_s,
        "no_shift_cpu_s": base.cpu_s,
        "curves": curves,
        "raw": {k: {"wall_s": v[0], "cpu_s": v[1]} for k, v in times.items()},
    }


def _recorder(store: list[Any]) -> Callable[[Any, tuple[Any, ...]], None]:
    """A forward pre-hook that keeps each call's first input."""

    def hook(_module: Any, args: tuple[Any, ...]) -> None:
        store.append(args[0])

    return hook


def shift_share(config: ModelBenchConfig, progress: Progress) -> dict[str, Any]:
    """The shift's own share of a forward pass, per precision: a low-noise reading of its overhead.

    One forward records the input of every shift (real shapes, layout and dtype); then each round
    times a whole forward and, right after, the same shifts alone on those inputs. The share is the
    median over rounds of (shift time / forward time): both sides see the same load, so it resolves
    differences far below the ±5% round-to-round noise of the latency sweep.
    """
    import torch

    from model_store.tsm import cpu_supports_bf16
    from model_store.tsm.shift import TemporalShift, temporal_shift

    precisions = ["fp32", "bf16"] if cpu_supports_bf16() else ["fp32"]
    x = _clip_batch(1, config)
    out: dict[str, Any] = {}
    for precision in precisions:
        runner = _runner(config, shift_div=8, place="blockres", precision=precision)
        shifts = [m for m in runner.model.modules() if isinstance(m, TemporalShift)]
        inputs: list[Any] = []
        hooks = [m.register_forward_pre_hook(_recorder(inputs)) for m in shifts]
        runner(x)  # warm-up, and the inputs of every shift
        for hook in hooks:
            hook.remove()
        calls = list(zip(shifts, inputs, strict=True))
        forwards, shifting = [], []
        with torch.inference_mode():
            for r in range(config.repeats):
                progress(f"shift share ({precision}): round {r + 1}/{config.repeats}")
                started = time.perf_counter()
                runner(x)
                forwards.append(time.perf_counter() - started)
                started = time.perf_counter()
                for module, tensor in calls:
                    temporal_shift(tensor, module.num_segments, module.shift_div, causal=module.causal)
                shifting.append(time.perf_counter() - started)
        out[precision] = {
            "shifts_per_forward": len(calls),
            "input_dtype": str(inputs[0].dtype),
            "forward_s": statistics.median(forwards),
            "shift_s": statistics.median(shifting),
            "share": statistics.median(s / f for s, f in zip(shifting, forwards, strict=True)),
            "raw": {"forward_s": forwards, "shift_s": shifting},
        }
    return out


def count_flops(config: ModelBenchConfig) -> int:
    """FLOPs of one clip (multiply-add = 2), as counted by torch.utils.flop_counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from model_store.tsm import build_tsm

    model = build_tsm(config.arch, num_classes=400, num_segments=config.segments).eval()
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(_clip_batch(1, config))
    return int(counter.get_total_flops())


def precision_bench(config: ModelBenchConfig, flops_per_clip: int, progress: Progress) -> dict[str, Any]:
    """Batch-1 latency and batch-B throughput for each precision this CPU runs natively."""
    from model_store.tsm import cpu_supports_bf16

    precisions = ["fp32", "bf16"] if cpu_supports_bf16() else ["fp32"]
    runners = {p: _runner(config, shift_div=8, place="blockres", precision=p) for p in precisions}
    single = _interleaved(runners, _clip_batch(1, config), config.repeats, progress, "batch 1")
    batched = _interleaved(
        runners, _clip_batch(config.batch, config), config.batch_repeats, progress, f"batch {config.batch}"
    )
    results: dict[str, Any] = {}
    for p in precisions:
        one, many = _median_timing(*single[p]), _median_timing(*batched[p])
        results[p] = {
            "batch1_latency_s": one.wall_s,
            "batch1_cpu_s": one.cpu_s,
            "batch1_gflops": flops_per_clip / one.wall_s / 1e9,
            "batch_latency_s": many.wall_s,
            "videos_per_s": config.batch / many.wall_s,
            "batch_gflops": flops_per_clip * config.batch / many.wall_s / 1e9,
            "raw": {"batch1_wall_s": single[p][0], "batch_wall_s": batched[p][0]},
        }
    if "bf16" in results:
        results["bf16_over_fp32_throughput"] = (
            results["bf16"]["videos_per_s"] / results["fp32"]["videos_per_s"]
        )
        results["bf16_over_fp32_batch1"] = (
            results["fp32"]["batch1_latency_s"] / results["bf16"]["batch1_latency_s"]
        )
    return results


def find_preloadable_allocators() -> dict[str, str]:
    """jemalloc/tcmalloc shared objects known to the dynamic linker, by name."""
    try:
        listing = subprocess.run(
            ["ldconfig", "-p"], capture_output=True, text=True, check=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    found: dict[str, str] = {}
    for line in listing.splitlines():
        name, _, path = line.strip().partition(" => ")
        for lib in ("jemalloc", "tcmalloc"):
            if name.startswith(f"lib{lib}") and ".so" in name and "x86-64" in name and lib not in found:
                found[lib] = path.strip()
    return found


def allocator_envs() -> dict[str, dict[str, str]]:
    """Environment overrides per allocator setting (applied to an environment without MALLOC_*)."""
    envs: dict[str, dict[str, str]] = {"glibc default": {}, "glibc no mmap/trim": dict(GLIBC_NO_TRIM)}
    for lib, path in find_preloadable_allocators().items():
        envs[lib] = {"LD_PRELOAD": path}
    return envs


def allocator_probe() -> None:
    """Subprocess entry: time batch-B inference at the default precision; print one JSON line."""
    config = ModelBenchConfig(**json.loads(sys.argv[1]))
    _set_threads(config)
    runner = _runner(config, shift_div=8, place="blockres", precision="auto")
    x = _clip_batch(config.batch, config)
    runner(x)
    walls, cpus = [], []
    for _ in range(config.batch_repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        runner(x)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    print(json.dumps({"wall_s": walls, "cpu_s": cpus, "dtype": str(runner.dtype)}))


def allocator_bench(config: ModelBenchConfig, progress: Progress) -> dict[str, Any]:
    base_env = {k: v for k, v in os.environ.items() if k not in _MALLOC_VARS}
    code = "from workers.benchmarks.model import allocator_probe; allocator_probe()"
    runs: dict[str, Any] = {}
    for name, overrides in allocator_envs().items():
        progress(f"allocators: {name} (batch {config.batch} in a subprocess)")
        proc = subprocess.run(
            [sys.executable, "-c", code, json.dumps(asdict(config))],
            env={**base_env, **overrides},
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        timing = _median_timing(result["wall_s"], result["cpu_s"])
        runs[name] = {
            "env": overrides,
            "dtype": result["dtype"],
            "batch_latency_s": timing.wall_s,
            "cpu_s": timing.cpu_s,
            "videos_per_s": config.batch / timing.wall_s,
            "raw_wall_s": result["wall_s"],
        }
    base = runs["glibc default"]["videos_per_s"]
    for run in runs.values():
        run["throughput_vs_glibc_default"] = run["videos_per_s"] / base
    return {"batch": config.batch, "runs": runs, "best": max(runs, key=lambda n: runs[n]["videos_per_s"])}


def run(config: ModelBenchConfig, progress: Progress) -> dict[str, Any]:
    import torch

    _set_threads(config)
    progress("counting FLOPs")
    flops = count_flops(config)
    results: dict[str, Any] = {
        "config": asdict(config),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "torch": torch.__version__,
            "malloc_env": {k: os.environ[k] for k in _MALLOC_VARS if k in os.environ},
            "loadavg_start": os.getloadavg(),
        },
        "gflops_per_clip": flops / 1e9,
    }
    results["shift_sweep"] = shift_sweep(config, progress)
    results["shift_share"] = shift_share(config, progress)
    results["precision"] = precision_bench(config, flops, progress)
    if config.allocators:
        results["allocators"] = allocator_bench(config, progress)
    results["machine"]["loadavg_end"] = os.getloadavg()
    return results


def write_results(results: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """model.json and model.png (overhead curves as in the paper's Fig. 2a, throughput bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_dir / "model.json", out_dir / "model.png"
    json_path.write_text(json.dumps(results, indent=2) + "\n")

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    curves = results["shift_sweep"]["curves"]
    for (place, points), color in zip(curves.items(), ("tab:blue", "tab:orange"), strict=True):
        x = [p["proportion"] for p in points]
        left.plot(x, [100 * p["overhead_wall"] for p in points], "o-", color=color, label=f"{place} (wall)")
        left.plot(
            x, [100 * p["overhead_cpu"] for p in points], "s--", color=color, label=f"{place} (CPU time)"
        )
    left.axhline(0, color="grey", linewidth=0.8)
    left.set_xticks([p[1] for p in PROPORTIONS], [p[0] for p in PROPORTIONS])
    left.set_xlabel("proportion of channels shifted")
    left.set_ylabel("latency overhead vs no shift (%)")
    cfg = results["config"]
    left.set_title(f"{cfg['arch']}, {cfg['segments']} frames, {cfg['size']} px, batch 1")
    left.legend()

    bars: dict[str, float] = {}
    for p in ("fp32", "bf16"):
        if p in results["precision"]:
            bars[p] = results["precision"][p]["videos_per_s"]
    for name, run in results.get("allocators", {}).get("runs", {}).items():
        bars[f"{name}\n({run['dtype'].removeprefix('torch.')})"] = run["videos_per_s"]
    right.bar(list(bars), list(bars.values()), color="tab:blue")
    right.set_ylabel("videos/s")
    right.set_title(f"batch {cfg['batch']} throughput")
    right.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return json_path, png_path
