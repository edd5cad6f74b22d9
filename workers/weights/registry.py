"""The models tsmindex knows by name: where each comes from, what it is, and how to check the file.

Published entries are the TSM authors' uniform-sampling Kinetics-400 checkpoints (the sampling the
indexer uses), with the figures of the TSM repository's README; they publish no digests, so theirs are
pinned on first download (``workers.weights.cache``). Shipped entries live in ``model_store/weights/``
with their digests recorded here and on their cards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import model_store
from workers.weights.errors import UnknownModelError

if TYPE_CHECKING:
    from model_store.tsm import ModelCard

# The network code (torch) is imported only where a card is needed: an offline failure stays fast.
WEIGHTS_DIR = Path(model_store.__file__).resolve().parent / "weights"

TSM_RELEASE = "https://hanlab.mit.edu/projects/tsm/models/"


@dataclass(frozen=True)
class KnownModel:
    name: str
    title: str
    filename: str  # the published name: the loader reads an official file's settings from it
    url: str | None = None  # where it is published (None: shipped in the repository)
    sha256: str | None = None  # None: not published; pinned on first download
    accuracy: str = ""  # what its publisher (or we) measured, and where
    notes: str = ""

    @property
    def shipped_path(self) -> Path | None:
        return None if self.url is not None else WEIGHTS_DIR / self.filename

    @property
    def source(self) -> str:
        return self.url or f"shipped: model_store/weights/{self.filename}"

    def card(self, *, version: str = "") -> ModelCard:
        """The card the loader gives this model. A published file's comes from its name (its version is
        its digest's first 12 hex digits, known once it is pinned); a shipped file carries its own."""
        from model_store.tsm import (
            KINETICS400_LABELS_PATH,
            ModelCard,
            Preprocess,
            parse_official_filename,
            read_card,
            read_labels,
        )

        if self.shipped_path is not None:
            return read_card(self.shipped_path)
        official = parse_official_filename(self.filename)
        classes = read_labels(KINETICS400_LABELS_PATH)
        return ModelCard(
            name=self.filename.split(".")[0],
            version=version,
            config=official.to_config(len(classes)),
            preprocess=Preprocess(),
            classes=classes,
        )


KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel(
        name="tsm-r50-kinetics400",
        title="the paper's TSM ResNet-50, Kinetics-400, 8 frames",
        filename="TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth",
        url=TSM_RELEASE + "TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth",
        accuracy="Kinetics-400 val top-1 71.2% (1 clip, centre crop), 72.8% (10 crops): TSM README",
    ),
    KnownModel(
        name="tsm-r50-kinetics400-16f",
        title="TSM ResNet-50, Kinetics-400, 16 frames",
        filename="TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment16_e50.pth",
        url=TSM_RELEASE + "TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment16_e50.pth",
        accuracy="Kinetics-400 val top-1 72.6% (1 clip, centre crop), 73.7% (10 crops): TSM README",
        notes="twice the frames per window, about twice the compute of the 8-frame model",
    ),
    KnownModel(
        name="tsm-motion-mnv2-32px",
        title="MobileNetV2-TSM, left/right/up/down motion at 32 px (demo)",
        filename="tsm-motion-mnv2-32px.pt",
        sha256="e5c17e90b8e8595a9d06e19cf7704e92f87adfc6ec6c76ad9c34da64b596ed8a",
        accuracy="400/400 fresh generated motion clips through `tsmindex index` (its card)",
        notes="knows four generated motions only; bi-directional (not for `tsmindex watch`)",
    ),
    KnownModel(
        name="tsm-motion-mnv2-32px-online",
        title="MobileNetV2-TSM, uni-directional (online), the same motions (demo for `watch`)",
        filename="tsm-motion-mnv2-32px-online.pt",
        sha256="4c7209d7d32f1cb12fa1da547112437d4bc5c584cabbec7b5fd8582038b360b5",
        accuracy="online on 4 generated shots: 100% of clean frames, label right 4.5 (median) / 7 (max) "
        "frames after each of 44 turns (`tsmindex bench online`, its card)",
        notes="past-only shift, trained on stream windows with 8 frames of history: for `tsmindex watch`",
    ),
)


def find_model(name: str) -> KnownModel:
    for model in KNOWN_MODELS:
        if model.name == name:
            return model
    known = ", ".join(m.name for m in KNOWN_MODELS)
    raise UnknownModelError(f"no known model {name!r}; known: {known} (see `tsmindex models`)")


def mirrored(url: str, mirror_url: str | None) -> str:
    """``url`` on ``mirror_url``'s scheme and host, same path: a mirror keeps the publisher's layout."""
    if not mirror_url:
        return url
    mirror, original = urlsplit(mirror_url), urlsplit(url)
    path = mirror.path.rstrip("/") + original.path
    return urlunsplit((mirror.scheme, mirror.netloc, path, original.query, ""))
