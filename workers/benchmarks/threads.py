"""``tsmindex bench threads``: how to split the cores between decoding and inference.

Each configuration runs P decode processes (``sample_clips`` on a generated 720p video, the way an
indexing worker decodes) beside one inference process with K intra-op threads (``ClipModel`` at the
default precision), all at once for the same measured interval, under a given ``OMP_WAIT_POLICY``.
A worker pipeline runs at the slower of its two stages, so each configuration's score is
min(decode clips/s, inference clips/s); configurations are measured in one run, so they share the
host's load alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ThreadConfig:
    decoders: int  # decode processes
    threads: int  # torch intra-op threads of the inference process
    wait_policy: str  # OMP_WAIT_POLICY: "passive" (threads sleep) or "active" (threads spin)

    @property
    def name(self) -> str:
        return f"{self.decoders} decode x {self.threads} threads, {self.wait_policy}"


@dataclass(frozen=True)
class ThreadBenchConfig:
    seconds: float = 30.0  # measured interval per configuration
    arch: str = "resnet50"
    size: int = 224
    batch: int = 8
    video: str = "720p-gop30"  # a workers.benchmarks.decode.BENCH_VIDEOS name
    work_dir: Path = Path("var/bench/decode")


def default_configs(cores: int) -> list[ThreadConfig]:
    """Decode processes x intra-op threads that fill the cores once or twice, both wait policies
    for the split that uses every core for each stage."""
    counts = sorted({1, max(cores // 2, 1), cores})
    configs = [ThreadConfig(p, k, "passive") for p in counts for k in counts if p + k <= 2 * cores]
    configs.append(ThreadConfig(cores, cores, "active"))
    configs.append(ThreadConfig(1, cores, "active"))
    return list(dict.fromkeys(configs))


def _until(start_at: float, seconds: float, work: Callable[[], int]) -> dict[str, float]:
    """Wait for the shared start, then count clips of ``work`` finished in ``seconds``."""
    time.sleep(max(start_at - time.time(), 0.0))
    started = time.perf_counter()
    clips = 0
    while time.perf_counter() - started < seconds:
        clips += work()
    return {"clips": clips, "elapsed_s": time.perf_counter() - started}


def decode_probe() -> None:
    """Subprocess entry: argv = video, num_segments, crop, start_at, seconds."""
    from workers.media import sample_clips

    video, segments, crop, start_at, seconds = sys.argv[1:6]

    def work() -> int:
        return len(
            sample_clips(video, num_segments=int(segments), crop=int(crop), resize=int(crop) * 8 // 7).clips
        )

    work()  # warm-up: imports, codec set-up
    print(json.dumps(_until(float(start_at), float(seconds), work)))


def infer_probe() -> None:
    """Subprocess entry: argv = arch, size, batch, start_at, seconds."""
    import torch

    from model_store.inference import ClipModel
    from model_store.tsm import ModelCard, Preprocess, TSMConfig, build_from_card
    from workers.benchmarks.serve import random_clips

    arch, size, batch, start_at, seconds = sys.argv[1:6]
    card = ModelCard(
        name="bench",
        version="bench",
        config=TSMConfig(arch=arch, num_classes=400, num_segments=8),
        preprocess=Preprocess(resize=int(size) * 8 // 7, crop=int(size)),
        classes=tuple(f"c{i}" for i in range(400)),
    )
    torch.manual_seed(0)
    model = ClipModel(build_from_card(card), card, device="cpu")
    clips = random_clips(int(batch), model.clip_shape)

    def work() -> int:
        model.classify(clips)
        return len(clips)

    work()
    print(json.dumps({**_until(float(start_at), float(seconds), work), "precision": model.precision}))


def _spawn(entry: str, args: Sequence[str], env: dict[str, str]) -> subprocess.Popen[str]:
    code = f"from workers.benchmarks.threads import {entry}; {entry}()"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(proc: subprocess.Popen[str], timeout_s: float) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"probe failed ({proc.returncode}): {err.strip()[-2000:]}")
    data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return data


def measure(config: ThreadBenchConfig, run: ThreadConfig, video: Path, setup_s: float) -> dict[str, Any]:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    start_at = time.time() + setup_s
    seconds = str(config.seconds)
    decode_env = {**base, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": run.wait_policy}
    infer_env = {**base, "OMP_NUM_THREADS": str(run.threads), "OMP_WAIT_POLICY": run.wait_policy}
    crop = str(config.size)
    decoders = [
        _spawn("decode_probe", [str(video), "8", crop, str(start_at), seconds], decode_env)
        for _ in range(run.decoders)
    ]
    infer = _spawn("infer_probe", [config.arch, crop, str(config.batch), str(start_at), seconds], infer_env)
    timeout = setup_s + 10 * config.seconds + 300
    decoded = [_result(p, timeout) for p in decoders]
    inferred = _result(infer, timeout)
    decode_rate = sum(d["clips"] / d["elapsed_s"] for d in decoded)
    infer_rate = inferred["clips"] / inferred["elapsed_s"]
    return {
        **asdict(run),
        "decode_clips_per_s": decode_rate,
        "inference_clips_per_s": infer_rate,
        "pipeline_clips_per_s": min(decode_rate, infer_rate),
        "precision": inferred["precision"],
    }


def run(
    config: ThreadBenchConfig, progress: Progress, configs: Sequence[ThreadConfig] | None = None
) -> dict[str, Any]:
    from workers.benchmarks.decode import BENCH_VIDEOS, ensure_video

    cores = os.cpu_count() or 1
    configs = list(configs or default_configs(cores))
    spec = next(v for v in BENCH_VIDEOS if v.name == config.video)
    progress(f"generating {spec.name}")
    video = ensure_video(spec, config.work_dir)
    rows = []
    for i, run_config in enumerate(configs, 1):
        progress(f"{i}/{len(configs)}: {run_config.name}")
        # Model build and warm-up happen before the shared start; they take longer on a busy host.
        rows.append(measure(config, run_config, video, setup_s=60.0))
    best = max(rows, key=lambda r: r["pipeline_clips_per_s"])
    return {
        "config": {**asdict(config), "work_dir": str(config.work_dir)},
        "cores": cores,
        "loadavg": os.getloadavg(),
        "rows": rows,
        "best": best,
    }
