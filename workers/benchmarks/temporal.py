"""``tsmindex bench temporal``: does the temporal shift model time? TSN vs TSM on the motion set.

The same backbone, data, seed and budget are trained twice, once without the shift (shift_div=0,
TSN: per-frame features averaged over time) and once with the paper's 1/8 + 1/8 shift (TSM), then
evaluated on a held-out split generated with another seed. On the motion set single frames carry
no class information, so TSN should sit near chance and TSM far above it.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from workers.training.motion import DIRECTION_CLASSES, LABELS_FILE, MotionSpec, make_motion_dataset

# TSM first: its checkpoint is the useful one if a run is cut short.
VARIANTS: tuple[tuple[str, int], ...] = (("TSM", 8), ("TSN", 0))


@dataclass(frozen=True)
class TemporalBenchConfig:
    out_dir: str
    arch: str = "resnet18"
    classes: tuple[str, ...] = DIRECTION_CLASSES
    size: int = 64
    frames: int = 8
    train_count: int = 2000
    test_count: int = 400
    train_seed: int = 1
    test_seed: int = 2
    epochs: int = 3
    batch_size: int = 16
    seed: int = 0
    workers: int = 1


def ensure_dataset(out_dir: Path, *, count: int, seed: int, spec: MotionSpec, show_progress: bool) -> Path:
    """Generate the split unless the same one (count, seed, spec) is already on disk."""
    from rich.progress import Progress

    meta = {"count": count, "seed": seed, "spec": {**asdict(spec), "classes": list(spec.classes)}}
    meta_path = out_dir / "motion.json"
    labels = out_dir / LABELS_FILE
    if labels.exists() and meta_path.exists() and json.loads(meta_path.read_text()) == meta:
        return labels
    with Progress(disable=not show_progress) as progress:
        task = progress.add_task(f"generating {out_dir.name} (seed {seed})", total=count)
        labels = make_motion_dataset(
            out_dir, count=count, seed=seed, spec=spec, on_clip=lambda _: progress.advance(task)
        )
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return labels


def run_temporal_bench(
    cfg: TemporalBenchConfig, *, variants: Sequence[tuple[str, int]] = VARIANTS, show_progress: bool = True
) -> dict[str, Any]:
    """Train and evaluate each variant; returns (and writes to ``<out_dir>/temporal.json``) the figures."""
    import torch

    from model_store.tsm import load_model
    from workers.training.datasets import load_samples
    from workers.training.evaluate import evaluate, plot_confusion
    from workers.training.train import TrainConfig, default_device, train, use_bf16

    out = Path(cfg.out_dir)
    spec = MotionSpec(classes=cfg.classes, size=cfg.size, frames=cfg.frames)
    train_csv = ensure_dataset(
        out / "data" / "train",
        count=cfg.train_count,
        seed=cfg.train_seed,
        spec=spec,
        show_progress=show_progress,
    )
    test_csv = ensure_dataset(
        out / "data" / "test",
        count=cfg.test_count,
        seed=cfg.test_seed,
        spec=spec,
        show_progress=show_progress,
    )
    device = default_device()
    rows: list[dict[str, Any]] = []
    for name, shift_div in variants:
        run_dir = out / "runs" / name.lower()
        for stale in (run_dir / "train.jsonl", run_dir / "last.pt"):
            stale.unlink(missing_ok=True)  # a fresh run, not a resume of an earlier one
        train_cfg = TrainConfig(
            data=str(train_csv),
            out_dir=str(run_dir),
            arch=cfg.arch,
            num_segments=cfg.frames,
            shift_div=shift_div,
            resize=cfg.size,
            crop=cfg.size,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            workers=cfg.workers,
            seed=cfg.seed,
            name=f"motion-{cfg.arch}-{name.lower()}",
        )
        started = time.perf_counter()
        result = train(train_cfg, show_progress=show_progress)
        seconds = time.perf_counter() - started
        model, card = load_model(result.checkpoint)
        held_out = evaluate(
            model.to(device),
            load_samples(test_csv, classes=card.classes),
            card=card,
            device=device,
            bf16=use_bf16(cfg.arch, device),
            workers=cfg.workers,
            show_progress=show_progress,
        )
        plot_confusion(held_out, run_dir / "confusion.png", title=f"{name} ({cfg.arch}) held-out")
        rows.append(
            {
                "variant": name,
                "shift_div": shift_div,
                "held_out_top1": held_out.top1,
                "held_out_top5": held_out.top5,
                "per_class_top1": held_out.per_class,
                "confusion": held_out.confusion.tolist(),
                "train_top1_last_epoch": result.train_top1,
                "train_loss_last_epoch": result.train_loss,
                "steps": result.step,
                "train_seconds": seconds,
                "checkpoint": str(result.checkpoint),
            }
        )
    report = {
        "config": {**asdict(cfg), "classes": list(cfg.classes)},
        "chance": 1.0 / len(cfg.classes),
        "classes": list(card.classes),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "results": rows,
    }
    (out / "temporal.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def render_table(report: dict[str, Any]) -> Any:
    from rich.table import Table

    cfg = report["config"]
    table = Table(
        title=f"TSN vs TSM, {cfg['arch']} at {cfg['size']} px, {len(cfg['classes'])} classes "
        f"(chance {report['chance']:.0%}), {cfg['train_count']} train / {cfg['test_count']} held-out clips, "
        f"{cfg['epochs']} epochs"
    )
    top5 = len(cfg["classes"]) > 5  # with 5 classes or fewer top-5 is 100% by construction
    columns = ["model", "shift", "held-out top-1", *(["held-out top-5"] if top5 else [])]
    for column in (*columns, "train top-1 (last epoch)", "train time"):
        table.add_column(column, justify="right" if column != "model" else "left")
    for row in report["results"]:
        table.add_row(
            row["variant"],
            "none" if row["shift_div"] == 0 else f"1/{row['shift_div']} + 1/{row['shift_div']}",
            f"{row['held_out_top1']:.1%}",
            *([f"{row['held_out_top5']:.1%}"] if top5 else []),
            f"{row['train_top1_last_epoch']:.1%}",
            f"{row['train_seconds'] / 60:.1f} min",
        )
    return table
