"""A real TorchServe for tests: a small random-weight TSM archive served from a private run directory
on free loopback ports, started and stopped by infra/scripts/torchserve.sh.

Import the fixtures into a conftest.py (``from tests.torchserve_server import *``)."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.core.config import Settings

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "infra" / "scripts" / "torchserve.sh"

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


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _script(command: str, *args: str, env: dict[str, str], timeout_s: float) -> None:
    result = subprocess.run(
        [str(SCRIPT), command, *args], env=env, capture_output=True, text=True, timeout=timeout_s
    )
    if result.returncode != 0:
        raise RuntimeError(f"torchserve.sh {command} failed:\n{result.stdout}\n{result.stderr}")


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

    inference, management, metrics, grpc_inference, grpc_management = _free_ports(5)
    run_dir = base / "run"
    env_settings = {
        "TSMINDEX_TORCHSERVE_INFERENCE_URL": f"http://127.0.0.1:{inference}",
        "TSMINDEX_TORCHSERVE_MANAGEMENT_URL": f"http://127.0.0.1:{management}",
        "TSMINDEX_TORCHSERVE_METRICS_URL": f"http://127.0.0.1:{metrics}",
        "TSMINDEX_TORCHSERVE_GRPC_INFERENCE_PORT": str(grpc_inference),
        "TSMINDEX_TORCHSERVE_GRPC_MANAGEMENT_PORT": str(grpc_management),
        "TSMINDEX_INFERENCE_BATCH_SIZE": str(BATCH_SIZE),
        "TSMINDEX_TORCHSERVE_MAX_BATCH_DELAY_MS": str(MAX_BATCH_DELAY_MS),
        "TSMINDEX_MODEL_NAME": "tsm",
    }
    env = {**os.environ, **env_settings, "TSMINDEX_TORCHSERVE_RUN_DIR": str(run_dir)}
    _script("start", str(archive), env=env, timeout_s=360)
    try:
        settings = Settings(
            torchserve_inference_url=env_settings["TSMINDEX_TORCHSERVE_INFERENCE_URL"],
            torchserve_management_url=env_settings["TSMINDEX_TORCHSERVE_MANAGEMENT_URL"],
            torchserve_metrics_url=env_settings["TSMINDEX_TORCHSERVE_METRICS_URL"],
            torchserve_token=None,
            torchserve_key_file=run_dir / "key_file.json",
            inference_batch_size=BATCH_SIZE,
            model_name="tsm",
            torchserve_max_retries=3,
            torchserve_backoff_base_s=0.1,
        )
        yield ServedModel(
            settings=settings,
            checkpoint=checkpoint,
            archive=archive,
            run_dir=run_dir,
            card_name=card.name,
            card_version=card.version,
            clip_shape=(NUM_SEGMENTS, CROP, CROP, 3),
        )
    finally:
        _script("stop", env=env, timeout_s=120)
