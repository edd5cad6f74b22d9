"""The TSM network: shapes, head, consensus, how frames mix, and the weights' description."""

from __future__ import annotations

from typing import Literal

import pytest
import torch
from torch import Tensor, nn

from model_store.tsm import (
    KINETICS400_LABELS_PATH,
    TSM,
    ModelCard,
    Preprocess,
    TSMConfig,
    build_from_card,
    build_tsm,
    read_labels,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(
    arch: str = "resnet18", *, shift_div: int = 8, mode: Literal["offline", "causal"] = "offline"
) -> TSM:
    torch.manual_seed(0)
    model = build_tsm(arch, num_classes=5, num_segments=3, shift_div=shift_div, mode=mode)
    # The reference head starts near zero; larger weights make logit comparisons meaningful.
    nn.init.normal_(model.new_fc.weight, std=0.1)
    return model.eval()


@pytest.mark.parametrize(("arch", "dim"), [("resnet18", 512), ("mobilenet_v2", 1280)])
@torch.no_grad()
def test_shapes_and_avg_consensus(arch: str, dim: int) -> None:
    model = _model(arch)
    x = torch.randn(2, 3, 3, 32, 32)
    logits, embedding = model.forward_features(x)
    assert logits.shape == (2, 5) and embedding.shape == (2, dim) and model.embedding_dim == dim
    frame_logits, frame_feats = model.forward_frames(x)
    assert frame_logits.shape == (2, 3, 5) and frame_feats.shape == (2, 3, dim)
    # Logits are averaged over segments before any softmax; the embedding is the averaged pool.
    assert torch.allclose(logits, frame_logits.mean(dim=1), atol=1e-6)
    assert torch.allclose(embedding, frame_feats.mean(dim=1), atol=1e-6)
    assert torch.allclose(logits, model.new_fc(embedding), atol=1e-5)
    assert torch.equal(model(x), logits)


def test_resnet50_embedding_is_2048() -> None:
    assert build_tsm("resnet50", num_classes=400).embedding_dim == 2048


def _influence(model: TSM, x: Tensor, frame: int) -> list[bool]:
    """Which frames' features change when only ``frame`` of the input changes."""
    with torch.no_grad():
        base = model.forward_frames(x)[1]
        y = x.clone()
        y[:, frame] += torch.randn_like(y[:, frame])
        changed = (model.forward_frames(y)[1] - base).abs().amax(dim=(0, 2)) > 1e-4
    return changed.tolist()


def test_frames_mix_in_both_directions_offline_past_only_causal_never_without_shift() -> None:
    x = torch.randn(1, 3, 3, 32, 32)
    # ResNet-18 has 8 shifted blocks: information from frame 1 reaches both neighbours.
    assert _influence(_model(), x, 1) == [True, True, True]
    assert _influence(_model(mode="causal"), x, 1) == [False, True, True]
    assert _influence(_model(mode="causal"), x, 0) == [True, True, True]
    assert _influence(_model(shift_div=0), x, 1) == [False, True, False]


def test_input_is_checked() -> None:
    model = _model()
    with pytest.raises(ValueError, match="expected 3 segments per clip"):
        model(torch.zeros(1, 4, 3, 32, 32))
    with pytest.raises(ValueError, match=r"expected input \[N, T, 3, H, W\]"):
        model(torch.zeros(3, 3, 32, 32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"arch": "vgg16"}, "unknown arch"),
        ({"arch": "resnet18", "shift_div": 1}, "shift_div must be 0"),
        ({"arch": "resnet18", "shift_place": "inplace"}, "unknown shift_place"),
        ({"arch": "mobilenet_v2", "shift_place": "block"}, "residual blocks only"),
        ({"arch": "resnet18", "mode": "bidirectional"}, "unknown mode"),
        ({"arch": "resnet18", "num_classes": 0}, "num_classes must be >= 1"),
    ],
)
def test_builder_rejects_bad_settings(kwargs: dict[str, object], message: str) -> None:
    args = {"num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_tsm(**args)  # type: ignore[call-overload]


def _card(num_classes: int = 3) -> ModelCard:
    config = TSMConfig(arch="resnet18", num_classes=num_classes, num_segments=3, shift_div=4)
    return ModelCard(
        name="tiny",
        version="2",
        config=config,
        preprocess=Preprocess(resize=72, crop=64),
        classes=tuple(f"class {i}" for i in range(num_classes)),
    )


def test_card_round_trips_through_plain_dicts() -> None:
    card = _card()
    d = card.to_dict()
    assert d == {
        "name": "tiny",
        "version": "2",
        "config": {
            "arch": "resnet18",
            "num_classes": 3,
            "num_segments": 3,
            "shift_div": 4,
            "shift_place": "blockres",
            "dropout": 0.5,
        },
        "preprocess": {"resize": 72, "crop": 64, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "classes": ["class 0", "class 1", "class 2"],
    }
    assert ModelCard.from_dict(d) == card
    model = build_from_card(card)
    assert model.config == card.config


def test_card_validation() -> None:
    with pytest.raises(ValueError, match="lists 2 class names for a network with 3 classes"):
        ModelCard(name="x", version="1", config=_card().config, preprocess=Preprocess(), classes=("a", "b"))
    with pytest.raises(ValueError, match=r"unknown fields \['shift'\]"):
        TSMConfig.from_dict({"arch": "resnet18", "num_classes": 3, "shift": 8})
    with pytest.raises(ValueError, match="needs 3 values"):
        Preprocess.from_dict({"mean": [0.5, 0.5]})


def test_kinetics_labels_ship_with_the_package() -> None:
    labels = read_labels(KINETICS400_LABELS_PATH)
    assert len(labels) == 400 and len(set(labels)) == 400
    assert labels[0] == "abseiling" and labels[-1] == "zumba"
