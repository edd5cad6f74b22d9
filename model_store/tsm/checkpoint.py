"""Checkpoints: our format, the official TSM release and mmaction2, loaded strictly without pickle code.

Every format is translated to this package's state-dict keys (the reference implementation's, minus
its DataParallel ``module.`` prefix), then loaded with ``strict`` semantics. A mismatch names the
missing and unexpected keys and the likely cause.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from model_store.tsm.config import (
    KINETICS400_LABELS_PATH,
    ModelCard,
    Preprocess,
    TSMConfig,
    read_labels,
)
from model_store.tsm.network import TSM

FORMAT = "tsmindex.tsm"
FORMAT_VERSION = 1

# Class counts of the datasets the reference code trains on (its file names carry the dataset).
DATASET_CLASSES = {
    "kinetics": 400,
    "something": 174,
    "somethingv2": 174,
    "ucf101": 101,
    "hmdb51": 51,
    "jester": 27,
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the network."""


@dataclass(frozen=True)
class CheckpointInfo:
    format: str  # "tsmindex" | "official" | "mmaction2"
    path: Path
    card: ModelCard | None  # our format carries one
    extra: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(
    path: str | Path, model: nn.Module, card: ModelCard, *, extra: dict[str, Any] | None = None
) -> None:
    """Write ``model``'s weights with their card (atomic replace).

    ``extra`` must hold only plain values (str, numbers, lists, dicts, tensors): files are read
    back with ``weights_only=True``.
    """
    config = _config_of(model)
    if config != card.config:
        raise ValueError(f"card config {card.config} does not describe the model {config}")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "card": card.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": dict(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(model: nn.Module, path: str | Path) -> CheckpointInfo:
    """Load weights in any supported format into ``model`` (strict); the format is auto-detected."""
    path = Path(path)
    return _load_into(model, _read(path), path)


def load_model(path: str | Path, *, card: ModelCard | None = None) -> tuple[TSM, ModelCard]:
    """Build the network a checkpoint describes and load it (eval mode).

    Our format carries its card. Official and mmaction2 files need ``card``, or an official file
    name (parsed by ``parse_official_filename``) for a Kinetics-400 model, whose class names ship here.
    """
    path = Path(path)
    obj = _read(path)
    fmt = detect_format(obj)
    if fmt == "tsmindex":
        file_card = ModelCard.from_dict(obj["card"])
        if card is not None and card.config != file_card.config:
            raise CheckpointError(
                f"{path}: the given card's config {card.config} differs from the file's {file_card.config}"
            )
        card = card or file_card
    elif card is None:
        card = _card_from_filename(path, obj, fmt)
    model = TSM(card.config)
    _load_into(model, obj, path)
    return model.eval(), card


def read_card(path: str | Path) -> ModelCard:
    """A checkpoint's card without building its network: ours carries one; an official file's comes
    from its published name (Kinetics-400 class names ship here)."""
    path = Path(path)
    obj = _read(path)
    fmt = detect_format(obj)
    if fmt == "tsmindex":
        return ModelCard.from_dict(obj["card"])
    return _card_from_filename(path, obj, fmt)


# --- formats -------------------------------------------------------------------------------------


def _read(path: Path) -> dict[str, Any]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # the unpickler raises many types; all mean "not a safe checkpoint"
        raise CheckpointError(f"{path}: not a readable weights-only checkpoint: {exc}") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict, got {type(obj).__name__}")
    return obj


def _state_dict_of(obj: Mapping[str, Any]) -> dict[str, Tensor]:
    state = obj.get("state_dict", obj)
    if not isinstance(state, Mapping):
        raise CheckpointError("'state_dict' is not a mapping")
    return {k: v for k, v in state.items() if isinstance(v, Tensor)}


def detect_format(obj: Mapping[str, Any]) -> str:
    """'tsmindex', 'official' or 'mmaction2', from the marker or the key layout."""
    if obj.get("format") == FORMAT:
        version = obj.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(f"{FORMAT} version {version} is not supported (expected {FORMAT_VERSION})")
        return "tsmindex"
    keys = list(_state_dict_of(obj))
    if any(k.startswith(("module.base_model.", "base_model.")) for k in keys):
        return "official"
    if any(k.startswith("backbone.") for k in keys):
        return "mmaction2"
    raise CheckpointError(f"unrecognised checkpoint layout; first keys: {keys[:5]}")


# Official MobileNetV2 (archs/mobilenet_v2.py) numbers its block layers flat; torchvision nests
# conv+bn in Conv2dNormActivation. Index maps for the expand-ratio-1 block and for the others.
_MNV2_EXPAND1 = {"0": "0.0", "1": "0.1", "3": "1", "4": "2"}
_MNV2_EXPAND = {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1", "6": "2", "7": "3"}
_MNV2_BLOCK = re.compile(r"^base_model\.features\.(\d+)\.conv\.(\d+)\.(.*)$")


def _official_key(key: str, arch: str) -> str:
    key = key.removeprefix("module.")
    if arch != "mobilenet_v2":
        return key
    m = _MNV2_BLOCK.match(key)
    if m is None:
        return key
    block, layer, rest = m.groups()
    table = _MNV2_EXPAND1 if block == "1" else _MNV2_EXPAND
    return f"base_model.features.{block}.conv.{table.get(layer, layer)}.{rest}"


_MM_RULES = [
    (re.compile(r"^backbone\.conv1\.conv\."), "base_model.conv1."),
    (re.compile(r"^backbone\.conv1\.bn\."), "base_model.bn1."),
    (re.compile(r"^backbone\.(layer\d+\.\d+\.(?:net\.)?)conv(\d)\.conv\."), r"base_model.\1conv\2."),
    (re.compile(r"^backbone\.(layer\d+\.\d+\.(?:net\.)?)conv(\d)\.bn\."), r"base_model.\1bn\2."),
    (re.compile(r"^backbone\.(layer\d+\.\d+\.(?:net\.)?)downsample\.conv\."), r"base_model.\1downsample.0."),
    (re.compile(r"^backbone\.(layer\d+\.\d+\.(?:net\.)?)downsample\.bn\."), r"base_model.\1downsample.1."),
    (re.compile(r"^cls_head\.fc_cls\."), "new_fc."),
]


def _mmaction2_key(key: str) -> str:
    for pattern, repl in _MM_RULES:
        new, n = pattern.subn(repl, key)
        if n:
            return new
    return key


def to_model_state(obj: Mapping[str, Any], fmt: str, arch: str) -> dict[str, Tensor]:
    """The checkpoint's tensors under this package's keys."""
    state = _state_dict_of(obj)
    if fmt == "official":
        return {_official_key(k, arch): v for k, v in state.items()}
    if fmt == "mmaction2":
        # The data preprocessor's mean/std buffers are not part of the network.
        return {_mmaction2_key(k): v for k, v in state.items() if not k.startswith("data_preprocessor.")}
    return state


# --- loading and diagnosis -----------------------------------------------------------------------


def _config_of(model: nn.Module) -> TSMConfig:
    config = getattr(model, "config", None)
    if not isinstance(config, TSMConfig):
        raise TypeError(f"expected a TSM network with a TSMConfig, got {type(model).__name__}")
    return config


def _declared(obj: Mapping[str, Any], fmt: str, path: Path) -> dict[str, Any]:
    """Settings the file states about itself (shift settings and segments leave no trace in weights)."""
    if fmt == "tsmindex":
        return ModelCard.from_dict(obj["card"]).config.to_dict()
    try:
        name = parse_official_filename(path.name)
    except ValueError:
        # The reference training script also stores its --arch beside the weights.
        arch = obj.get("arch")
        return {"arch": _ARCH_ALIASES.get(arch, arch)} if isinstance(arch, str) else {}
    return {
        "arch": name.arch,
        "num_segments": name.num_segments,
        "shift_div": name.shift_div,
        "shift_place": name.shift_place,
    }


def _load_into(model: nn.Module, obj: Mapping[str, Any], path: Path) -> CheckpointInfo:
    config = _config_of(model)
    fmt = detect_format(obj)
    declared = _declared(obj, fmt, path)
    differs = {
        k: (v, getattr(config, k))
        for k, v in declared.items()
        if k != "dropout" and k in TSMConfig.__dataclass_fields__ and getattr(config, k) != v
    }
    if differs:
        detail = ", ".join(f"{k}: checkpoint {a!r}, model {b!r}" for k, (a, b) in differs.items())
        raise CheckpointError(f"{path} ({fmt}) was made for another network: {detail}")

    state = to_model_state(obj, fmt, config.arch)
    expected = model.state_dict()
    # Checkpoints written before PyTorch 0.4.1 lack BatchNorm's step counter; it does not affect
    # inference, so keep the model's own.
    for key, value in expected.items():
        prefix = key.removesuffix("num_batches_tracked")
        if prefix != key and key not in state and f"{prefix}running_mean" in state:
            state[key] = value
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    shapes = sorted(
        (k, tuple(state[k].shape), tuple(expected[k].shape))
        for k in expected.keys() & state.keys()
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or shapes:
        raise CheckpointError(
            _mismatch_message(path, fmt, config, state, expected.keys(), missing, unexpected, shapes)
        )
    model.load_state_dict(state, strict=True)
    card = ModelCard.from_dict(obj["card"]) if fmt == "tsmindex" else None
    extra = dict(obj.get("extra", {})) if fmt == "tsmindex" else {}
    return CheckpointInfo(format=fmt, path=path, card=card, extra=extra)


def guess_arch(keys: Iterable[str]) -> str | None:
    """The backbone a set of (our) keys belongs to, from its block structure."""
    keys = list(keys)
    if any(k.startswith("base_model.features.") for k in keys):
        return "mobilenet_v2"
    blocks: dict[int, set[int]] = {}
    for k in keys:
        m = re.match(r"^base_model\.layer(\d)\.(\d+)\.", k)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if not blocks:
        return None
    bottleneck = any(re.search(r"\.conv3\.|\.conv3\.net\.", k) for k in keys)
    depth = len(blocks.get(3, ()))
    table = {(False, 2): "resnet18", (False, 6): "resnet34", (True, 6): "resnet50", (True, 23): "resnet101"}
    return table.get((bottleneck, depth))


def _shift_layout(keys: Iterable[str]) -> str:
    keys = list(keys)
    if any(re.search(r"\.conv1\.net\.|\.conv\.0\.0\.net\.", k) for k in keys):
        return "residual-branch shift (blockres)"
    if any(re.match(r"^base_model\.layer\d\.\d+\.net\.", k) for k in keys):
        return "block shift (block)"
    return "no shift (shift_div=0)"


def _mismatch_message(
    path: Path,
    fmt: str,
    config: TSMConfig,
    state: Mapping[str, Tensor],
    expected_keys: Iterable[str],
    missing: list[str],
    unexpected: list[str],
    shapes: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
) -> str:
    causes: list[str] = []
    arch = guess_arch(state)
    if arch is not None and arch != config.arch:
        causes.append(f"wrong arch: the checkpoint looks like {arch}, the model is {config.arch}")
    fc = state.get("new_fc.weight")
    if fc is not None and fc.dim() == 2 and fc.shape[0] != config.num_classes:
        causes.append(
            f"class count: the checkpoint has {fc.shape[0]} classes, the model {config.num_classes}"
        )
    got_shift, want_shift = _shift_layout(state), _shift_layout(expected_keys)
    if not causes and got_shift != want_shift:
        causes.append(f"shift setting: the checkpoint has {got_shift}, the model {want_shift}")
    if not causes:
        causes.append("unknown: compare the key lists (another architecture variant or a partial file?)")

    def head(items: list[str]) -> str:
        return ", ".join(items[:8]) + (f", ... ({len(items) - 8} more)" if len(items) > 8 else "")

    lines = [
        f"{path} ({fmt} format) does not fit TSM({config.arch}, classes={config.num_classes}, "
        f"segments={config.num_segments}, shift_div={config.shift_div}, place={config.shift_place})",
        "likely cause: " + "; ".join(causes),
    ]
    if missing:
        lines.append(f"missing keys ({len(missing)}): {head(missing)}")
    if unexpected:
        lines.append(f"unexpected keys ({len(unexpected)}): {head(unexpected)}")
    if shapes:
        lines.append(
            "shape mismatches: "
            + head([f"{k} checkpoint {list(a)} vs model {list(b)}" for k, a, b in shapes])
        )
    return "\n".join(lines)


# --- official file names -------------------------------------------------------------------------

_ARCH_ALIASES = {"mobilenetv2": "mobilenet_v2"}
_OFFICIAL_NAME = re.compile(
    r"^TSM_(?P<dataset>[A-Za-z0-9]+)_(?P<modality>RGB|Flow|RGBDiff)_(?P<arch>resnet\d+|mobilenetv2)"
    r"(?:_shift(?P<div>\d+)_(?P<place>blockres|block))?(?P<tpool>_tpool)?"
    r"_(?P<consensus>avg|identity)_segment(?P<segments>\d+)_e(?P<epochs>\d+)(?P<suffix>(?:_[A-Za-z0-9]+)*)"
    r"\.pth(?:\.tar)?$"
)


@dataclass(frozen=True)
class OfficialName:
    dataset: str
    modality: str
    arch: str
    shift_div: int  # 0: trained without shift (TSN)
    shift_place: str
    consensus: str
    num_segments: int
    epochs: int
    dense: bool

    @property
    def num_classes(self) -> int | None:
        return DATASET_CLASSES.get(self.dataset)

    def to_config(self, num_classes: int) -> TSMConfig:
        return TSMConfig(
            arch=self.arch,
            num_classes=num_classes,
            num_segments=self.num_segments,
            shift_div=self.shift_div,
            shift_place=self.shift_place,
        )


def parse_official_filename(name: str) -> OfficialName:
    """Settings from a reference-code file name, e.g.
    ``TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth``."""
    m = _OFFICIAL_NAME.match(Path(name).name)
    if m is None:
        raise ValueError(f"not an official TSM checkpoint name: {name!r}")
    suffix = set(filter(None, m["suffix"].split("_")))
    if m["modality"] != "RGB":
        raise ValueError(f"{name}: only RGB models are supported, not {m['modality']}")
    if m["tpool"] or "nl" in suffix:
        raise ValueError(f"{name}: temporal pooling and non-local variants are not supported")
    if m["consensus"] != "avg":
        raise ValueError(f"{name}: only average consensus is supported")
    return OfficialName(
        dataset=m["dataset"],
        modality=m["modality"],
        arch=_ARCH_ALIASES.get(m["arch"], m["arch"]),
        shift_div=int(m["div"] or 0),
        shift_place=m["place"] or "blockres",
        consensus=m["consensus"],
        num_segments=int(m["segments"]),
        epochs=int(m["epochs"]),
        dense="dense" in suffix,
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _card_from_filename(path: Path, obj: Mapping[str, Any], fmt: str) -> ModelCard:
    try:
        name = parse_official_filename(path.name)
    except ValueError as exc:
        raise CheckpointError(f"{path} ({fmt}): pass a ModelCard; {exc}") from exc
    fc = to_model_state(obj, fmt, name.arch).get("new_fc.weight")
    num_classes = int(fc.shape[0]) if fc is not None else name.num_classes
    if name.dataset != "kinetics" or num_classes != 400:
        raise CheckpointError(
            f"{path}: class names ship for Kinetics-400 only; pass a ModelCard for {name.dataset}"
        )
    return ModelCard(
        name=path.name.split(".")[0],
        version=_sha256(path)[:12],
        config=name.to_config(num_classes),
        preprocess=Preprocess(),
        classes=read_labels(KINETICS400_LABELS_PATH),
    )
