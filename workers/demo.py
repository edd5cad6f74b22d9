"""What a first run needs on a machine with nothing: sample videos and, until trained weights are
configured (``TSMINDEX_CHECKPOINT_PATH``), a randomly initialised model with the Kinetics-400 classes.

Labels from the random model are arbitrary but deterministic; the pipeline around it is the real one.
"""

from __future__ import annotations

from pathlib import Path

from model_store.tsm import (
    KINETICS400_LABELS_PATH,
    ModelCard,
    Preprocess,
    build_tsm,
    read_labels,
    save_checkpoint,
)
from workers.media.synth import make_video

RANDOM_MODEL_NAME = "tsm-random"


def random_model_card(
    *, arch: str = "resnet18", num_segments: int = 8, resize: int = 128, crop: int = 112, seed: int = 0
) -> ModelCard:
    model = build_tsm(arch, num_classes=400, num_segments=num_segments)
    return ModelCard(
        name=RANDOM_MODEL_NAME,
        version=f"{arch}-seed{seed}",
        config=model.config,
        preprocess=Preprocess(resize=resize, crop=crop),
        classes=read_labels(KINETICS400_LABELS_PATH),
    )


def write_random_checkpoint(
    path: Path,
    *,
    arch: str = "resnet18",
    num_segments: int = 8,
    resize: int = 128,
    crop: int = 112,
    seed: int = 0,
) -> ModelCard:
    """A seeded random-init TSM with the Kinetics-400 classes, saved in our checkpoint format."""
    import torch

    torch.manual_seed(seed)
    model = build_tsm(arch, num_classes=400, num_segments=num_segments).eval()
    card = random_model_card(arch=arch, num_segments=num_segments, resize=resize, crop=crop, seed=seed)
    save_checkpoint(path, model, card)
    return card


def write_sample_videos(directory: Path, *, count: int = 3) -> list[Path]:
    """Short synthetic videos (a moving texture), each with different length, size and codec."""
    directory.mkdir(parents=True, exist_ok=True)
    specs = [
        ("pan-h264.mp4", {"frames": 90, "fps": 30.0, "size": (320, 240), "codec": "libx264"}),
        ("pan-vp9.webm", {"frames": 60, "fps": 24.0, "size": (256, 144), "codec": "libvpx-vp9"}),
        ("pan-long.mp4", {"frames": 300, "fps": 25.0, "size": (240, 180), "codec": "libx264"}),
    ]
    paths = []
    for i in range(count):
        name, spec = specs[i % len(specs)]
        if i >= len(specs):
            name = f"{i}-{name}"
        paths.append(make_video(directory / name, **spec))  # type: ignore[arg-type]
    return paths
