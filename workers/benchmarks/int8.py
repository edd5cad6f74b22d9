"""``tsmindex bench int8``: what int8 costs in labels and what it buys in speed, in one run.

1. Agreement: the shipped motion model, quantized on clips of the motion training split (seed 1),
   against itself in fp32 on the held-out evaluation set (seed 2, 400 clips): top-1 agreement,
   top-5 overlap, and each side's accuracy. Clips come from ``sample_clips``, the indexing decoder.
2. Speed: the served architecture (ResNet-50, 8 frames; 112 px by default, see the config) through
   ``ClipModel`` at fp32, bf16 (where the CPU has it natively) and int8, plus ONNX Runtime fp32 so
   that the runtime's share and the int8 share of any gain are told apart. Every side is timed once
   per round in rotating order, so load from other processes hits all alike; ratios are medians of
   per-round ratios.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Int8BenchConfig:
    data_dir: Path = Path("var/bench/int8")
    calibration_clips: int = 64  # motion training clips the int8 motion model is calibrated on
    eval_clips: int = 400  # the held-out set of model_store/weights/tsm-motion-mnv2-32px.md
    arch: str = "resnet50"
    segments: int = 8
    # 112, not the served 224: ONNX Runtime's calibrator needs more than 9 GB for one ResNet-50
    # clip at 224 px (model_store.quantize), too much for a shared 2-core test host.
    size: int = 112
    batch: int = 8  # the CPU batch size (model_store.inference.CPU_BATCH_SIZE)
    rounds: int = 3
    speed_calibration_clips: int = 2  # random clips: ranges do not change int8 speed


def agreement(config: Int8BenchConfig, progress: Progress) -> dict[str, Any]:
    import torch

    from model_store.inference import ClipModel
    from model_store.int8 import Int8Network
    from model_store.quantize import quantize_int8
    from model_store.tsm import load_model
    from workers.benchmarks.temporal import ensure_dataset
    from workers.media import sample_clips
    from workers.quantization import calibration_clips
    from workers.training.datasets import load_samples
    from workers.training.shipped import SHIPPED_MODEL, SHIPPED_SPEC

    network, card = load_model(SHIPPED_MODEL)
    progress("motion splits")
    train = ensure_dataset(
        config.data_dir / "train",
        count=config.calibration_clips,
        seed=1,
        spec=SHIPPED_SPEC,
        show_progress=False,
    )
    test = ensure_dataset(
        config.data_dir / "test", count=config.eval_clips, seed=2, spec=SHIPPED_SPEC, show_progress=False
    )
    calibration = calibration_clips([train.parent], card, max_clips=config.calibration_clips)
    progress(f"quantizing on {len(calibration.clips)} clips")
    int8_path = quantize_int8(network, card, calibration.clips, config.data_dir / "motion-int8.onnx")
    fp32 = ClipModel(network, card, device="cpu", precision="fp32")
    int8 = ClipModel(Int8Network(int8_path), card, device="cpu", precision="int8")
    videos = load_samples(test, classes=card.classes)
    progress(f"evaluating {len(videos.samples)} held-out clips")
    clips = [
        sample_clips(s.path, num_segments=t, resize=r, crop=c).clips[0].frames
        for s, t, r, c in (
            (s, card.config.num_segments, card.preprocess.resize, card.preprocess.crop)
            for s in videos.samples
        )
    ]
    labels = torch.tensor([s.label for s in videos.samples])
    probs = {}
    for name, model in (("fp32", fp32), ("int8", int8)):
        parts = [model.infer(model.preprocess(clips[i : i + 32]))[0] for i in range(0, len(clips), 32)]
        probs[name] = torch.cat(parts)
    k = min(5, len(card.classes))
    top = {name: p.topk(k, dim=1).indices for name, p in probs.items()}
    overlap = [
        len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(top["fp32"], top["int8"], strict=True)
    ]
    return {
        "model": f"{card.name} {card.version}",
        "calibration_clips": len(calibration.clips),
        "clips": len(clips),
        "top1_agreement": float((top["fp32"][:, 0] == top["int8"][:, 0]).float().mean()),
        f"top{k}_overlap": float(np.mean(overlap)),
        "fp32_top1": float((top["fp32"][:, 0] == labels).float().mean()),
        "int8_top1": float((top["int8"][:, 0] == labels).float().mean()),
        "max_abs_prob_diff": float((probs["fp32"] - probs["int8"]).abs().max()),
    }


def _speed_models(config: Int8BenchConfig, work: Path, progress: Progress) -> dict[str, Any]:
    """name -> a callable running one batch, all on the same random weights."""
    import torch

    from model_store.inference import ClipModel
    from model_store.int8 import Int8Network
    from model_store.quantize import quantize_int8
    from model_store.tsm import (
        ModelCard,
        Preprocess,
        TSMConfig,
        build_from_card,
        cpu_supports_bf16,
        export_onnx,
    )
    from workers.benchmarks.serve import random_clips

    card = ModelCard(
        name=f"tsm-{config.arch}-bench",
        version="bench",
        config=TSMConfig(arch=config.arch, num_classes=400, num_segments=config.segments),
        preprocess=Preprocess(resize=round(config.size * 256 / 224), crop=config.size),
        classes=tuple(f"class_{i}" for i in range(400)),
    )
    torch.manual_seed(0)
    network = build_from_card(card).eval()
    shape = (config.segments, config.size, config.size, 3)
    calibration = random_clips(config.speed_calibration_clips, shape)
    progress("quantizing the speed model")
    int8_path = quantize_int8(network, card, calibration, work / "int8.onnx")
    progress("exporting ONNX fp32")
    fp32_onnx = export_onnx(network, work / "fp32.onnx", height=config.size, width=config.size)
    models = {"torch fp32": ClipModel(network, card, device="cpu", precision="fp32")}
    if cpu_supports_bf16():
        models["torch bf16"] = ClipModel(network, card, device="cpu", precision="bf16")
    models["onnxruntime fp32"] = ClipModel(Int8Network(fp32_onnx), card, device="cpu", precision="int8")
    models["onnxruntime int8"] = ClipModel(Int8Network(int8_path), card, device="cpu", precision="int8")
    batch = models["torch fp32"].preprocess(random_clips(config.batch, shape, seed=1))
    return {name: (lambda m=m: m.infer(batch)) for name, m in models.items()}


def speed(config: Int8BenchConfig, progress: Progress) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tsm-bench-int8-") as tmp:
        runners = _speed_models(config, Path(tmp), progress)
        names = list(runners)
        for name in names:
            progress(f"warm-up {name}")
            runners[name]()
        walls: dict[str, list[float]] = {n: [] for n in names}
        for r in range(config.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                progress(f"round {r + 1}/{config.rounds}: {name}")
                started = time.perf_counter()
                runners[name]()
                walls[name].append(time.perf_counter() - started)
    result: dict[str, Any] = {
        name: {"clips_per_s": config.batch / statistics.median(w), "wall_s": w} for name, w in walls.items()
    }
    ratios: dict[str, float] = {}
    for base in ("torch fp32", "torch bf16", "onnxruntime fp32"):
        if base in walls:
            per_round = [b / i for b, i in zip(walls[base], walls["onnxruntime int8"], strict=True)]
            ratios[f"int8 over {base}"] = statistics.median(per_round)
    return {"runs": result, "speedup": ratios}


def run(config: Int8BenchConfig, progress: Progress) -> dict[str, Any]:
    import os

    import torch

    return {
        "config": {**asdict(config), "data_dir": str(config.data_dir)},
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "agreement": agreement(config, progress),
        "speed": speed(config, progress),
    }
