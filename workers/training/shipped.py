"""The small motion model that ships in the repository, and clips it recognises.

``SHIPPED_MODEL`` is MobileNetV2-TSM trained on the procedural motion set at 32 x 32 px (fp16 weights,
4.6 MB; its card, training command and figures sit next to it in ``model_store/weights/``). It knows motion
directions only: the published Kinetics-400 checkpoint remains the model for real footage.
"""

from __future__ import annotations

from pathlib import Path

from workers.training.motion import DIRECTION_CLASSES, MotionSpec, make_motion_dataset
from workers.weights.registry import WEIGHTS_DIR

SHIPPED_MODEL = WEIGHTS_DIR / "tsm-motion-mnv2-32px.pt"
# What the shipped model was trained on: demo clips must be made the same way (frame size = the
# card's resize = crop, so sampling feeds the network whole frames).
SHIPPED_SPEC = MotionSpec(classes=DIRECTION_CLASSES, size=32, frames=8, fps=8)


def write_demo_clips(directory: str | Path, *, count: int = 8, seed: int = 2024) -> Path:
    """``count`` motion clips the shipped model recognises, as ``<directory>/<label>/<label>_NNNNN.mp4``
    (the true label is the folder name) plus ``labels.csv``; returns the CSV's path.

    Training used seeds 1 (train) and 2 (held-out): any other seed gives clips it never saw.
    """
    return make_motion_dataset(directory, count=count, seed=seed, spec=SHIPPED_SPEC)
