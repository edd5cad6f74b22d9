"""A real TorchServe for tests: a small random-weight TSM archive served from a private run directory
on free loopback ports, started and stopped by infra/scripts/torchserve.sh.

Import the fixtures into a conftest.py (``from tests.torchserve_server import *``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.core.config import Settings
from workers.torchserve_process import served

# Small enough for a shared 2-core CPU: ResNet-18, 4 frames of 64 px, 10 classes.
ARCH, NUM_SEGMENTS, CROP, NUM_CLASSES = "resnet18", 4, 64, 10
BATCH_SIZE = 8
# Long enough that clips sent together land in one batch even on a loaded machine.
MAX_BATCH_DELAY_MS = 500

__all__ = ["ServedModel", "torchserve"]


@dataclass(frozen=True)
class ServedModel:
    settings: Settings  # points at this server; inference key read from its key file
    checkpoint: Path  # the same weights, for the in-process engine
    archive: Path
    run_dir: Path
    card_name: str
    card_version: str
    clip_shape: tuple[int, int, int, int]


@pytest.fixture(scope="session")
def torchserve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedModel]:
    import torch

    from model_store.archive import build_archive
    from model_store.tsm import ModelCard, Preprocess, TSMConfig, build_from_card, save_checkpoint

    base = tmp_path_factory.mktemp("torchserve")
    card = ModelCard(
        name="tsm-test",
        version="t1",
        config=TSMConfig(arch=ARCH, num_classes=NUM_CLASSES, num_segments=NUM_SEGMENTS),
        preprocess=Preprocess(resize=73, crop=CROP),
        classes=tuple(f"action_{i}" for i in range(NUM_CLASSES)),
    )
    torch.manual_seed(0)
    model = build_from_card(card).eval()
    checkpoint = base / "weights.pt"
    save_checkpoint(checkpoint, model, card)
    # fp32 on both sides, so served and in-process answers can be compared tightly.
    archive = build_archive(model, card, base / "model-store", model_name="tsm", precision="fp32")

    run_dir = base / "run"
    with served(
        archive,
        run_dir,
        batch_size=BATCH_SIZE,
        max_batch_delay_ms=MAX_BATCH_DELAY_MS,
        model_name="tsm",
        start_timeout_s=360,
    ) as settings:
        yield ServedModel(
            settings=settings.model_copy(
                update={"torchserve_max_retries": 3, "torchserve_backoff_base_s": 0.1}
            ),
            checkpoint=checkpoint,
            archive=archive,
            run_dir=run_dir,
            card_name=card.name,
            card_version=card.version,
            clip_shape=(NUM_SEGMENTS, CROP, CROP, 3),
        )
