"""Served (TorchServe) vs in-process throughput for the same TSM clips, and batch fill under load.

Both sides run in one invocation on the same machine and the same weights, so their ratio is
meaningful even on a loaded host; absolute clips/s are not comparable across hosts.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from services.core.config import Settings
from workers.torchserve_process import served


@dataclass(frozen=True)
class ServeRow:
    batch_size: int
    in_process_clips_per_s: float
    served_clips_per_s: float
    ratio: float  # served / in-process
    mean_batch: float  # clips per batch the handler saw
    batch_fill: float  # mean_batch / batch_size


def random_clips(n: int, shape: tuple[int, int, int, int], *, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=shape, dtype=np.uint8) for _ in range(n)]


def handler_counts(settings: Settings) -> tuple[float, float]:
    """(batches, clips) the handler has reported on the metrics endpoint."""
    text = httpx.get(f"{settings.torchserve_metrics_url}/metrics", timeout=10).text
    values = {"batches": 0.0, "clips": 0.0}
    for name in values:
        match = re.search(rf"^tsmindex_handler_{name}_total\{{[^}}]*\}} (\S+)$", text, re.MULTILINE)
        if match:
            values[name] = float(match.group(1))
    return values["batches"], values["clips"]


def _clips_per_s(run: Any, clips: Sequence[np.ndarray]) -> float:
    started = time.perf_counter()
    run(clips)
    return len(clips) / (time.perf_counter() - started)


def measure(
    engine: Any, settings: Settings, clips: Sequence[np.ndarray], batch_size: int, *, rounds: int
) -> tuple[float, float, float]:
    """(in-process clips/s, served clips/s, mean clips per handler batch), medians over ``rounds``.

    The two sides alternate round by round, so load from other processes hits both alike. The
    client keeps two batches' worth of clips in flight, so a batch can fill while one runs.
    """
    from workers.inference import TorchServeClient

    local: list[float] = []
    remote: list[float] = []
    with TorchServeClient(settings, max_in_flight=2 * batch_size) as client:
        engine.classify(clips[:1])  # warm-up: the first call pays for lazy initialisation
        client.classify(clips[:1])
        batches_before, clips_before = handler_counts(settings)
        for _ in range(rounds):
            local.append(_clips_per_s(engine.classify, clips))
            remote.append(_clips_per_s(client.classify, clips))
    expected = clips_before + rounds * len(clips)
    deadline = time.monotonic() + 5.0  # a batch's metrics line may trail its responses a little
    while True:
        batches_after, clips_after = handler_counts(settings)
        if clips_after >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    mean_batch = (clips_after - clips_before) / max(batches_after - batches_before, 1.0)
    return float(np.median(local)), float(np.median(remote)), mean_batch


def run_serve_benchmark(
    *,
    arch: str,
    num_segments: int,
    crop: int,
    num_clips: int,
    batch_sizes: Sequence[int],
    max_batch_delay_ms: int,
    workers: int,
    rounds: int = 3,
    on_row: Any = None,
    device: str | None = None,
) -> tuple[list[ServeRow], dict[str, Any]]:
    """One archive of random weights, then for each batch size: in-process, then served.

    ``device`` is the in-process side's (default: CUDA where present, as TorchServe picks)."""
    import torch

    from model_store.archive import build_archive
    from model_store.inference import ClipModel
    from model_store.tsm import (
        KINETICS400_LABELS_PATH,
        ModelCard,
        Preprocess,
        TSMConfig,
        build_from_card,
        read_labels,
    )
    from workers.inference import InProcessEngine

    classes = read_labels(KINETICS400_LABELS_PATH)
    card = ModelCard(
        name=f"tsm-{arch}-bench",
        version="bench",
        config=TSMConfig(arch=arch, num_classes=len(classes), num_segments=num_segments),
        preprocess=Preprocess(resize=round(crop * 256 / 224), crop=crop),
        classes=classes,
    )
    torch.manual_seed(0)
    model = build_from_card(card).eval()
    # At least two batches per measurement, so that the served side can fill every batch.
    all_clips = random_clips(max(num_clips, 2 * max(batch_sizes)), (num_segments, crop, crop, 3))
    work = Path(tempfile.mkdtemp(prefix="tsm-bench-serve-"))
    rows: list[ServeRow] = []
    try:
        archive = build_archive(model, card, work / "model-store", model_name="tsm")
        clip_model = ClipModel(model, card, device=device)
        meta = {
            "arch": arch,
            "num_segments": num_segments,
            "crop": crop,
            "clips": {b: max(num_clips, 2 * b) for b in batch_sizes},
            "precision": clip_model.precision,
            "device": str(clip_model.device),
            "max_batch_delay_ms": max_batch_delay_ms,
            "workers": workers,
            "rounds": rounds,
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        }
        for batch_size in batch_sizes:
            engine = InProcessEngine(clip_model, batch_size=batch_size)
            clips = all_clips[: max(num_clips, 2 * batch_size)]
            with served(
                archive,
                work / f"run-{batch_size}",
                batch_size=batch_size,
                max_batch_delay_ms=max_batch_delay_ms,
                workers=workers,
            ) as settings:
                local, remote, mean_batch = measure(engine, settings, clips, batch_size, rounds=rounds)
            row = ServeRow(batch_size, local, remote, remote / local, mean_batch, mean_batch / batch_size)
            rows.append(row)
            if on_row is not None:
                on_row(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows, meta


def rows_as_dicts(rows: Sequence[ServeRow]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
