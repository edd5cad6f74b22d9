"""``tsmindex train``, ``tsmindex eval``, ``tsmindex make-dataset motion``, ``tsmindex bench temporal``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from workers.cli.app import app, bench_app

make_dataset_app = typer.Typer(help="Generate datasets for training and tests.", no_args_is_help=True)
app.add_typer(make_dataset_app, name="make-dataset")


def _classes(value: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in value.split(",") if c.strip())


def _scales(value: str) -> tuple[float, ...]:
    return tuple(float(s) for s in value.split(",") if s.strip())


@app.command("train")
def train_command(
    data: Path = typer.Argument(..., help="Folder per class, or a CSV/JSONL of (path, label)."),
    out: Path = typer.Option(Path("var/train"), "--out", "-o", help="Run folder: last.pt, train.jsonl."),
    val: Path | None = typer.Option(None, help="Held-out set evaluated after every epoch."),
    arch: str = typer.Option("resnet18", help="resnet18|resnet34|resnet50|resnet101|mobilenet_v2"),
    segments: int = typer.Option(8, help="Frames per clip (T)."),
    shift_div: int = typer.Option(8, help="Shift 1/shift_div of the channels each way; 0 = TSN."),
    causal: bool = typer.Option(
        False, help="Shift from the past only: a model `tsmindex watch` runs frame by frame (online TSM)."
    ),
    resize: int = typer.Option(256, help="Shorter side before cropping."),
    crop: int = typer.Option(224, help="Square crop fed to the network."),
    epochs: int = typer.Option(3),
    batch_size: int = typer.Option(16),
    optimizer: str = typer.Option("auto", help="adamw|sgd|auto (AdamW from scratch, SGD when fine-tuning)."),
    lr: float | None = typer.Option(None, help="Peak learning rate (default per optimizer)."),
    weight_decay: float | None = typer.Option(None),
    warmup: float = typer.Option(0.15, help="Fraction of steps spent warming up."),
    context: int = typer.Option(
        0, help="Frames of history before each clip, not scored (with --causal: train for streams)."
    ),
    dropout: float = typer.Option(0.5),
    scales: str = typer.Option("1", help="Multi-scale crop fractions, e.g. 1,0.875,0.75,0.66 (TSN)."),
    flip: bool = typer.Option(False, help="Random horizontal flip (swaps left/right motion)."),
    init: Path | None = typer.Option(None, help="Published checkpoint to fine-tune from."),
    resume: Path | None = typer.Option(None, help="Continue a run from its last.pt."),
    partial_bn: bool | None = typer.Option(None, help="Freeze all BN but the first (default: with --init)."),
    bf16: bool | None = typer.Option(None, help="bf16 autocast (default: per architecture)."),
    channels_last: bool = typer.Option(True),
    workers: int = typer.Option(1, help="Data-loader processes."),
    seed: int = typer.Option(0),
    max_steps: int | None = typer.Option(None, help="Stop after this many steps."),
    name: str = typer.Option("tsm-custom", help="Model name written into the card."),
    version: str = typer.Option("1"),
    half_out: Path | None = typer.Option(None, help="Also write the final weights in fp16 here."),
    progress: bool = typer.Option(True),
) -> None:
    """Train (or fine-tune) TSM on labelled videos."""
    from dataclasses import replace

    from workers.training.train import TrainConfig, config_from_checkpoint, export_half, train

    cfg = TrainConfig(
        data=str(data),
        out_dir=str(out),
        val=str(val) if val else None,
        arch=arch,
        num_segments=segments,
        shift_div=shift_div,
        causal=causal,
        context=context,
        dropout=dropout,
        resize=resize,
        crop=crop,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        lr=lr,
        weight_decay=weight_decay,
        warmup=warmup,
        scales=_scales(scales),
        flip=flip,
        init=str(init) if init else None,
        partial_bn=partial_bn,
        bf16=bf16,
        channels_last=channels_last,
        workers=workers,
        seed=seed,
        max_steps=max_steps,
        name=name,
        version=version,
    )
    if resume is not None:
        # The run's own settings; only the stopping point and the plumbing may change.
        cfg = replace(config_from_checkpoint(resume), max_steps=max_steps, workers=workers)
    result = train(cfg, resume=resume, show_progress=progress)
    typer.echo(
        f"step {result.step}, {result.epochs_done} epochs, train top-1 {result.train_top1:.1%}"
        + (f", val top-1 {result.val_top1:.1%}" if result.val_top1 is not None else "")
        + f", {result.seconds / 60:.1f} min -> {result.checkpoint}"
    )
    if half_out is not None:
        export_half(result.checkpoint, half_out)
        typer.echo(f"fp16 weights -> {half_out}")


@app.command("eval")
def eval_command(
    checkpoint: Path = typer.Argument(..., help="Ours, or an official one under its published name."),
    data: Path = typer.Argument(..., help="Folder per class, or a CSV/JSONL of (path, label)."),
    out: Path = typer.Option(Path("var/eval"), "--out", "-o", help="Writes eval.json and confusion.png."),
    decoder: str = typer.Option(
        "training", help="training: the training pipeline's test sampling; media: workers.media.sample_clips."
    ),
    batch_size: int = typer.Option(16),
    workers: int = typer.Option(0),
    progress: bool = typer.Option(True),
) -> None:
    """Top-1/top-5 accuracy and a confusion matrix of a trained model."""
    from rich.console import Console
    from rich.table import Table

    from model_store.tsm import load_model
    from workers.training.datasets import load_samples
    from workers.training.evaluate import evaluate, evaluate_media, plot_confusion, save_result
    from workers.training.train import default_device, use_bf16

    device = default_device()
    model, card = load_model(checkpoint)
    videos = load_samples(data, classes=card.classes)
    bf16 = use_bf16(card.config.arch, device)
    model.to(device)
    if decoder == "media":
        result = evaluate_media(
            model, videos, card=card, device=device, batch_size=batch_size, bf16=bf16, show_progress=progress
        )
    elif decoder == "training":
        result = evaluate(
            model,
            videos,
            card=card,
            device=device,
            batch_size=batch_size,
            bf16=bf16,
            workers=workers,
            show_progress=progress,
        )
    else:
        raise typer.BadParameter("decoder must be 'training' or 'media'")
    save_result(result, out / "eval.json", checkpoint=str(checkpoint), data=str(data), decoder=decoder)
    plot_confusion(result, out / "confusion.png", title=f"{card.name}: top-1 {result.top1:.1%}")
    table = Table(title=f"{card.name} v{card.version} on {data} ({result.count} clips)")
    table.add_column("class")
    table.add_column("top-1", justify="right")
    for label, acc in result.per_class.items():
        table.add_row(label, f"{acc:.1%}")
    table.add_row("[bold]all", f"[bold]{result.top1:.1%}")
    table.add_row("top-5" if len(card.classes) > 5 else f"top-{len(card.classes)}", f"{result.top5:.1%}")
    Console().print(table)
    typer.echo(f"-> {out / 'eval.json'}, {out / 'confusion.png'}")


@make_dataset_app.command("motion")
def make_motion_command(
    out: Path = typer.Argument(..., help="Folder to write <label>/*.mp4 and labels.csv into."),
    count: int = typer.Option(2000, help="Number of clips (classes balanced)."),
    seed: int = typer.Option(1, help="Use another seed for a held-out split."),
    classes: str = typer.Option(
        "left,right,up,down", help="Any of left,right,up,down,approach,recede,static (comma-separated)."
    ),
    size: int = typer.Option(64, help="Frame side in pixels."),
    frames: int = typer.Option(8, help="Frames per video."),
    fps: int = typer.Option(8),
) -> None:
    """A motion dataset whose single frames carry no class information (H.264 MP4 files)."""
    from workers.benchmarks.temporal import ensure_dataset
    from workers.training.motion import MotionSpec

    spec = MotionSpec(classes=_classes(classes), size=size, frames=frames, fps=fps)
    labels = ensure_dataset(out, count=count, seed=seed, spec=spec, show_progress=True)
    typer.echo(f"{count} clips -> {labels}")


@make_dataset_app.command("motion-stream")
def make_motion_stream_command(
    out: Path = typer.Argument(..., help="Folder to write <label>/*.mp4 and labels.csv into."),
    count: int = typer.Option(2000, help="Number of windows (classes balanced)."),
    seed: int = typer.Option(1, help="Use another seed for a held-out split."),
    size: int = typer.Option(32, help="Frame side in pixels."),
    frames: int = typer.Option(8, help="Labelled frames at the end of each window."),
    context: int = typer.Option(8, help="Frames of history before them (often a turn)."),
    fps: int = typer.Option(8),
) -> None:
    """Windows cut from shots whose object changes direction, labelled by their last frames: training
    data for online models (`tsmindex train --causal --context N`)."""
    from rich.progress import Progress

    from workers.training.motion import DIRECTION_CLASSES, MotionSpec, make_stream_dataset

    spec = MotionSpec(classes=DIRECTION_CLASSES, size=size, frames=frames, fps=fps)
    with Progress() as progress:
        task = progress.add_task(f"windows (seed {seed})", total=count)
        labels = make_stream_dataset(
            out, count=count, seed=seed, spec=spec, context=context, on_clip=lambda _: progress.advance(task)
        )
    typer.echo(f"{count} windows of {context} + {frames} frames -> {labels}")


@bench_app.command("temporal")
def bench_temporal_command(
    out: Path = typer.Option(Path("bench-results/temporal"), "--out", "-o"),
    arch: str = typer.Option("resnet18"),
    classes: str = typer.Option("left,right,up,down"),
    size: int = typer.Option(64),
    frames: int = typer.Option(8),
    train_count: int = typer.Option(2000),
    test_count: int = typer.Option(400),
    train_seed: int = typer.Option(1),
    test_seed: int = typer.Option(2),
    epochs: int = typer.Option(3),
    batch_size: int = typer.Option(16),
    seed: int = typer.Option(0),
    workers: int = typer.Option(1),
    progress: bool = typer.Option(True),
) -> None:
    """Train TSN (no shift) and TSM (1/8 + 1/8 shift) alike; compare top-1 on a held-out split."""
    from rich.console import Console

    from workers.benchmarks.temporal import TemporalBenchConfig, render_table, run_temporal_bench

    cfg = TemporalBenchConfig(
        out_dir=str(out),
        arch=arch,
        classes=_classes(classes),
        size=size,
        frames=frames,
        train_count=train_count,
        test_count=test_count,
        train_seed=train_seed,
        test_seed=test_seed,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        workers=workers,
    )
    report = run_temporal_bench(cfg, show_progress=progress)
    Console().print(render_table(report))
    typer.echo(f"-> {out / 'temporal.json'}")
    typer.echo(json.dumps({r["variant"]: round(r["held_out_top1"], 4) for r in report["results"]}))
