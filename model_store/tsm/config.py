"""What describes a set of TSM weights: architecture settings, preprocessing and class names."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2")
SHIFT_PLACES = ("blockres", "block")

KINETICS400_LABELS_PATH = Path(__file__).resolve().parent.parent / "labels" / "kinetics400.txt"


def _fields(cls_name: str, d: Mapping[str, Any], required: set[str], optional: set[str]) -> None:
    missing = required - d.keys()
    unknown = d.keys() - required - optional
    if missing or unknown:
        raise ValueError(f"{cls_name}: missing fields {sorted(missing)}, unknown fields {sorted(unknown)}")


@dataclass(frozen=True)
class TSMConfig:
    """Architecture settings; everything needed to rebuild the network that fits a set of weights."""

    arch: str
    num_classes: int
    num_segments: int = 8
    shift_div: int = 8  # fold = C // shift_div; 0 = no shift (the TSN baseline)
    shift_place: str = "blockres"
    dropout: float = 0.5
    # Past-only shift (the paper's online mode): the weights were trained without seeing frame t+1,
    # so they run frame by frame (``OnlineTSM``) as well as over whole clips.
    causal: bool = False

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; expected one of {ARCHS}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.num_segments < 1:
            raise ValueError(f"num_segments must be >= 1, got {self.num_segments}")
        # shift_div == 1 would make the two shifted folds overlap the whole tensor twice.
        if self.shift_div != 0 and self.shift_div < 2:
            raise ValueError(f"shift_div must be 0 (no shift) or >= 2, got {self.shift_div}")
        if self.shift_place not in SHIFT_PLACES:
            raise ValueError(f"unknown shift_place {self.shift_place!r}; expected one of {SHIFT_PLACES}")
        if self.arch == "mobilenet_v2" and self.shift_place != "blockres":
            raise ValueError("mobilenet_v2 shifts inside its residual blocks only (shift_place='blockres')")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "arch": self.arch,
            "num_classes": self.num_classes,
            "num_segments": self.num_segments,
            "shift_div": self.shift_div,
            "shift_place": self.shift_place,
            "dropout": self.dropout,
        }
        if self.causal:
            # Only when set, so the cards of bi-directional models read as before in older code.
            d["causal"] = True
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TSMConfig:
        _fields(
            "TSMConfig",
            d,
            {"arch", "num_classes"},
            {"num_segments", "shift_div", "shift_place", "dropout", "causal"},
        )
        return cls(**dict(d))


@dataclass(frozen=True)
class Preprocess:
    """Test-time preprocessing the weights were trained with (RGB, values scaled to 0..1 first)."""

    resize: int = 256  # shorter side
    crop: int = 224  # centre crop
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def to_dict(self) -> dict[str, Any]:
        return {"resize": self.resize, "crop": self.crop, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocess:
        _fields("Preprocess", d, set(), {"resize", "crop", "mean", "std"})
        kwargs = dict(d)
        for key in ("mean", "std"):
            if key in kwargs:
                values = tuple(float(v) for v in kwargs[key])
                if len(values) != 3:
                    raise ValueError(f"Preprocess.{key} needs 3 values, got {len(values)}")
                kwargs[key] = values
        return cls(**kwargs)


@dataclass(frozen=True)
class ModelCard:
    """What travels with a set of weights: how to rebuild, how to feed and how to read the network."""

    name: str
    version: str
    config: TSMConfig
    preprocess: Preprocess
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.classes) != self.config.num_classes:
            raise ValueError(
                f"model card {self.name!r} lists {len(self.classes)} class names "
                f"for a network with {self.config.num_classes} classes"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "config": self.config.to_dict(),
            "preprocess": self.preprocess.to_dict(),
            "classes": list(self.classes),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelCard:
        _fields("ModelCard", d, {"name", "version", "config", "classes"}, {"preprocess"})
        return cls(
            name=str(d["name"]),
            version=str(d["version"]),
            config=TSMConfig.from_dict(d["config"]),
            preprocess=Preprocess.from_dict(d.get("preprocess", {})),
            classes=tuple(str(c) for c in d["classes"]),
        )


def read_labels(path: str | Path) -> tuple[str, ...]:
    """Class names, one per line, in class-index order (blank lines ignored)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip())
