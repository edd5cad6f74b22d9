"""The training loop: TSN sampling, warm-up + cosine schedule, partial BN, checkpoints in our format.

Optimiser choice (``optimizer="auto"``): training from scratch uses AdamW (lr 1e-3, weight decay
0.05), which took ResNet-18-TSM to 100% on the motion set in 3 epochs on this machine class; starting
from a published checkpoint uses the paper's fine-tuning recipe, SGD with momentum 0.9 and weight
decay 5e-4 with partial BN, which keeps the pretrained statistics intact.

bf16 autocast (``bf16=None``) is switched on for the ResNets on CPUs with bf16 support and on CUDA,
off for MobileNetV2, whose depthwise convolutions got slower under bf16 when measured on CPU.
channels_last helped every architecture measured and is on by default.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from model_store.tsm import (
    TSM,
    ModelCard,
    Preprocess,
    TSMConfig,
    build_from_card,
    load_model,
    save_checkpoint,
)
from workers.training.datasets import LabelledVideos, VideoClips, load_samples, normalise

LAST_CHECKPOINT = "last.pt"
LOG_FILE = "train.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; saved inside every checkpoint it writes."""

    data: str
    out_dir: str
    val: str | None = None
    arch: str = "resnet18"
    num_segments: int = 8
    shift_div: int = 8
    causal: bool = False  # past-only shift: a model OnlineTSM can run frame by frame
    # Frames of history before each clip (causal models): the network runs context + num_segments
    # frames and is scored on the last num_segments, as it runs on a stream with a past.
    context: int = 0
    dropout: float = 0.5
    resize: int = 256
    crop: int = 224
    epochs: int = 3
    batch_size: int = 16
    optimizer: str = "auto"  # "adamw" | "sgd" | "auto" (see the module docstring)
    lr: float | None = None  # None: 1e-3 for AdamW, 0.01 * batch_size / 64 for SGD
    weight_decay: float | None = None  # None: 0.05 for AdamW, 5e-4 for SGD
    warmup: float = 0.15  # fraction of all steps spent on the linear warm-up
    scales: tuple[float, ...] = (1.0,)  # multi-scale crop; TSN's is (1, .875, .75, .66)
    flip: bool = False  # swaps left/right: only for datasets without direction classes
    init: str | None = None  # a published checkpoint to start from
    partial_bn: bool | None = None  # None: on when starting from ``init``
    bf16: bool | None = None  # None: per architecture, see the module docstring
    channels_last: bool = True
    clip_grad: float = 20.0  # TSM's gradient-norm clip
    workers: int = 1
    seed: int = 0
    max_steps: int | None = None  # stop early (smoke tests); the schedule still spans all epochs
    name: str = "tsm-custom"
    version: str = "1"
    device: str | None = None
    resolved: dict[str, Any] = field(default_factory=dict)  # filled in by train(): the auto choices

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scales"] = list(self.scales)
        return d


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    step: int
    epochs_done: int
    train_loss: float  # mean over the last epoch run
    train_top1: float
    seconds: float
    val_top1: float | None = None


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(arch: str, device: torch.device) -> bool:
    if arch == "mobilenet_v2":
        return False
    return device.type == "cuda" or (device.type == "cpu" and _cpu_has_bf16())


def set_partial_bn(model: nn.Module) -> None:
    """Freeze every BatchNorm but the first (statistics and affine parameters), as TSN/TSM do when
    fine-tuning: small batches would otherwise overwrite the pretrained statistics. Call after
    ``model.train()``."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d | nn.BatchNorm3d | nn.BatchNorm1d)]
    for bn in bns[1:]:
        bn.eval()
        for p in bn.parameters():
            p.requires_grad_(False)


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """LR multiplier: linear from ~0 to 1 over ``warmup`` steps, then cosine down to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch, optionally skipping the batches a resumed run already did."""

    def __init__(self, n: int, *, seed: int, epoch: int, skip: int = 0) -> None:
        self.n, self.seed, self.epoch, self.skip = n, seed, epoch, skip

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng((self.seed, self.epoch)).permutation(self.n)
        return iter(order[self.skip :].tolist())

    def __len__(self) -> int:
        return self.n - self.skip


class LastFrames(nn.Module):
    """The mean logits of a clip's last ``keep`` frames: how a clip with context in front is scored."""

    def __init__(self, model: TSM, keep: int) -> None:
        super().__init__()
        self.model = model
        self.keep = keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, context + keep, 3, H, W] -> [N, K]
        logits: torch.Tensor = self.model.forward_frames(x)[0][:, -self.keep :].mean(dim=1)
        return logits


def transfer_weights(model: TSM, source: TSM) -> list[str]:
    """Copy ``source``'s weights into ``model``; parameters whose shapes differ (the classifier, when
    the class lists differ) keep their fresh initialisation. Returns the names left out."""
    target = model.state_dict()
    loaded = source.state_dict()
    if loaded.keys() != target.keys():
        raise ValueError("published checkpoint does not match the network's layout")
    kept = {k: v for k, v in loaded.items() if v.shape == target[k].shape}
    dropped = sorted(set(target) - set(kept))
    # Only the classifier may differ: its rows are the source's classes.
    num_src = source.config.num_classes
    for name in dropped:
        if loaded[name].shape[0] != num_src:
            raise ValueError(f"published checkpoint differs from the network at {name}")
    target.update(kept)
    model.load_state_dict(target)
    return dropped


def _build(cfg: TrainConfig, classes: tuple[str, ...]) -> tuple[TSM, ModelCard, list[str]]:
    """The network and its card: fresh, or from ``cfg.init`` with a new classifier when needed."""
    preprocess = Preprocess(resize=cfg.resize, crop=cfg.crop)
    if cfg.init is None:
        config = TSMConfig(
            arch=cfg.arch,
            num_classes=len(classes),
            num_segments=cfg.num_segments + cfg.context,
            shift_div=cfg.shift_div,
            dropout=cfg.dropout,
            causal=cfg.causal,
        )
        card = ModelCard(cfg.name, cfg.version, config, preprocess, classes)
        return build_from_card(card), card, []
    source, source_card = load_model(cfg.init)
    # The shift's direction adds no weights: a bi-directional checkpoint starts a causal model.
    config = replace(
        source_card.config,
        num_classes=len(classes),
        num_segments=cfg.num_segments + cfg.context,
        dropout=cfg.dropout,
        causal=cfg.causal,
    )
    preprocess = replace(source_card.preprocess, resize=cfg.resize, crop=cfg.crop)
    card = ModelCard(cfg.name, cfg.version, config, preprocess, classes)
    model = build_from_card(card)
    if source_card.classes == classes:
        model.load_state_dict(source.state_dict())
        return model, card, []
    return model, card, transfer_weights(model, source)


def _resolve(cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    optimizer = cfg.optimizer
    if optimizer == "auto":
        optimizer = "sgd" if cfg.init else "adamw"
    if optimizer not in {"adamw", "sgd"}:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; expected adamw, sgd or auto")
    lr = cfg.lr if cfg.lr is not None else (1e-3 if optimizer == "adamw" else 0.01 * cfg.batch_size / 64)
    wd = cfg.weight_decay if cfg.weight_decay is not None else (0.05 if optimizer == "adamw" else 5e-4)
    return {
        "optimizer": optimizer,
        "lr": lr,
        "weight_decay": wd,
        "partial_bn": cfg.partial_bn if cfg.partial_bn is not None else cfg.init is not None,
        "bf16": cfg.bf16 if cfg.bf16 is not None else use_bf16(cfg.arch, device),
        "device": str(device),
    }


def _optimizer(model: nn.Module, resolved: dict[str, Any]) -> torch.optim.Optimizer:
    # No weight decay on biases and BN parameters (1-d tensors), as is usual for both optimisers.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": resolved["weight_decay"]},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if resolved["optimizer"] == "adamw":
        return torch.optim.AdamW(groups, lr=resolved["lr"])
    return torch.optim.SGD(groups, lr=resolved["lr"], momentum=0.9)


def read_training_state(path: str | Path) -> dict[str, Any]:
    """The ``extra`` training state (step, epoch, optimiser, config) saved in one of our checkpoints."""
    raw = torch.load(str(path), map_location="cpu", weights_only=True)
    state = raw.get("extra") if isinstance(raw, dict) else None
    if not isinstance(state, dict) or "step" not in state:
        raise ValueError(f"{path} holds no training state to resume from")
    return state


def config_from_checkpoint(path: str | Path) -> TrainConfig:
    """The :class:`TrainConfig` a checkpoint written by :func:`train` was trained with."""
    d = dict(read_training_state(path)["train_config"])
    d["scales"] = tuple(d["scales"])
    return TrainConfig(**d)


def train(
    cfg: TrainConfig,
    *,
    resume: str | Path | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """Train (or resume) a run into ``cfg.out_dir``; writes ``last.pt`` after every epoch and at the
    end, and appends one JSON object per logging step and per epoch to ``train.jsonl``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from workers.training.evaluate import evaluate

    if cfg.context and not cfg.causal:
        raise ValueError("context (frames of history) is for causal models: pass causal too")
    device = torch.device(cfg.device) if cfg.device else default_device()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)

    state: dict[str, Any] | None = None
    if resume is not None:
        state = read_training_state(resume)
        model, card = load_model(resume)
        classes = card.classes
        train_set = load_samples(cfg.data, classes=classes)
        dropped: list[str] = []
    else:
        train_set = load_samples(cfg.data)
        model, card, dropped = _build(cfg, train_set.classes)
        classes = card.classes
    resolved = _resolve(cfg, device)
    cfg = replace(cfg, resolved=resolved)

    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    scored: nn.Module = LastFrames(model, cfg.num_segments) if cfg.context else model
    if resolved["partial_bn"]:
        set_partial_bn(model)  # also turns off requires_grad, so the optimiser skips them
    optimizer = _optimizer(model, resolved)
    dataset = VideoClips(
        train_set,
        num_segments=card.config.num_segments,
        preprocess=card.preprocess,
        train=True,
        scales=cfg.scales,
        flip=cfg.flip,
        seed=cfg.seed,
    )
    steps_per_epoch = math.ceil(len(dataset) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = max(1, int(cfg.warmup * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, total_steps, warmup_steps)
    )
    step = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
    val_set: LabelledVideos | None = load_samples(cfg.val, classes=classes) if cfg.val else None

    log = (out / LOG_FILE).open("a", encoding="utf-8")
    if state is None:
        _write(log, {"event": "start", "config": cfg.to_dict(), "card": card.to_dict(), "dropped": dropped})
    else:
        _write(log, {"event": "resume", "step": step, "from": str(resume)})
    loss_fn = nn.CrossEntropyLoss()
    started = time.perf_counter()
    epoch_loss = epoch_top1 = float("nan")
    val_top1: float | None = None
    last = out / LAST_CHECKPOINT
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  acc {task.fields[acc]:.1%}  lr {task.fields[lr]:.2e}"),
        TimeRemainingColumn(),
    )
    max_steps = cfg.max_steps if cfg.max_steps is not None else total_steps
    with Progress(*columns, disable=not show_progress) as progress:
        while step < min(total_steps, max_steps):
            epoch, skip = divmod(step, steps_per_epoch)
            dataset.set_epoch(epoch)
            loader = DataLoader(
                dataset,
                batch_size=cfg.batch_size,
                sampler=EpochSampler(len(dataset), seed=cfg.seed, epoch=epoch, skip=skip * cfg.batch_size),
                num_workers=cfg.workers,
                persistent_workers=False,
            )
            task = progress.add_task(
                f"epoch {epoch + 1}/{cfg.epochs}",
                total=steps_per_epoch,
                completed=skip,
                loss=0.0,
                acc=0.0,
                lr=0.0,
            )
            model.train()
            if resolved["partial_bn"]:
                set_partial_bn(model)
            loss_sum, correct, seen = 0.0, 0, 0
            for clips, labels in loader:
                x = normalise(clips.to(device, non_blocking=True), card.preprocess)
                y = labels.to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=resolved["bf16"]):
                    logits = scored(x)
                loss = loss_fn(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                optimizer.step()
                scheduler.step()
                step += 1
                loss_sum += loss.item() * len(y)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(y)
                lr = scheduler.get_last_lr()[0]
                progress.update(task, advance=1, loss=loss_sum / seen, acc=correct / seen, lr=lr)
                _write(
                    log, {"event": "step", "step": step, "epoch": epoch + 1, "loss": loss.item(), "lr": lr}
                )
                if step >= max_steps:
                    break
            epoch_loss, epoch_top1 = loss_sum / max(1, seen), correct / max(1, seen)
            epoch_done = step % steps_per_epoch == 0
            record: dict[str, Any] = {
                "event": "epoch" if epoch_done else "stop",
                "step": step,
                "epoch": epoch + 1,
                "train_loss": epoch_loss,
                "train_top1": epoch_top1,
                "seconds": time.perf_counter() - started,
            }
            if val_set is not None and epoch_done:
                result = evaluate(
                    scored,
                    val_set,
                    card=card,
                    device=device,
                    bf16=resolved["bf16"],
                    channels_last=cfg.channels_last,
                    show_progress=False,
                )
                val_top1 = result.top1
                record |= {"val_top1": result.top1, "val_top5": result.top5}
            _write(log, record)
            _save(last, model, card, optimizer, scheduler, step, cfg)
    log.close()
    return TrainResult(
        checkpoint=last,
        step=step,
        epochs_done=step // steps_per_epoch,
        train_loss=epoch_loss,
        train_top1=epoch_top1,
        seconds=time.perf_counter() - started,
        val_top1=val_top1,
    )


def _write(log: Any, record: dict[str, Any]) -> None:
    log.write(json.dumps(record) + "\n")
    log.flush()


def _save(
    path: Path,
    model: TSM,
    card: ModelCard,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    cfg: TrainConfig,
) -> None:
    extra = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "train_config": cfg.to_dict(),
    }
    save_checkpoint(path, model, card, extra=extra)  # atomic: never a half-written file


def export_half(
    src: str | Path, dst: str | Path, *, name: str | None = None, version: str | None = None
) -> ModelCard:
    """Write ``src``'s weights as fp16, without training state: the small file to ship.

    ``load_model`` copies them into an fp32 network (``load_state_dict`` casts), so nothing else
    needs to know. ``name``/``version`` rename the card. A run trained with context ships with the
    segment count it is scored on (the frames ``tsmindex watch`` averages); the weights do not
    depend on it.
    """
    model, card = load_model(src)
    try:
        scored_segments = int(read_training_state(src)["train_config"]["num_segments"])
    except (ValueError, KeyError):
        scored_segments = card.config.num_segments
    config = replace(card.config, num_segments=scored_segments)
    card = replace(card, name=name or card.name, version=version or card.version, config=config)
    half = build_from_card(card)
    half.load_state_dict(model.state_dict())
    save_checkpoint(dst, half.half(), card)
    return card
