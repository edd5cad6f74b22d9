from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from model_store.archive import build_archive, read_manifest
from model_store.tsm import ModelCard, Preprocess, build_from_card, build_tsm, load_checkpoint, load_model
from model_store.tsm import save_checkpoint as save_tsm
from workers.training.motion import MotionSpec, make_motion_dataset
from workers.training.train import (
    LOG_FILE,
    TrainConfig,
    config_from_checkpoint,
    export_half,
    read_training_state,
    set_partial_bn,
    train,
    transfer_weights,
    warmup_cosine,
)

SEGMENTS = 4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 left/right clips of 4 frames at 32 px."""
    root = tmp_path_factory.mktemp("tiny")
    spec = MotionSpec(classes=("left", "right"), size=32, frames=SEGMENTS)
    return make_motion_dataset(root, count=8, seed=11, spec=spec)


def _cfg(data: Path, out: Path, **overrides: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "data": str(data),
        "out_dir": str(out),
        "arch": "resnet18",
        "num_segments": SEGMENTS,
        "resize": 32,
        "crop": 32,
        "epochs": 6,
        "batch_size": 4,
        "dropout": 0.0,
        "workers": 0,
        "bf16": False,
        "name": "tiny",
    }
    return TrainConfig(**(base | overrides))


def _log(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]


def test_training_lowers_the_loss_and_writes_a_checkpoint_others_accept(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = train(_cfg(tiny, out), show_progress=False)
    assert result.step == 12 and result.epochs_done == 6

    epochs = [r for r in _log(out) if r["event"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4, 5, 6]
    assert epochs[-1]["train_loss"] < 0.75 * epochs[0]["train_loss"]

    # Our checkpoint format, with the labels and the preprocessing inside.
    model, card = load_model(result.checkpoint)
    assert card.classes == ("left", "right")
    assert card.preprocess == Preprocess(resize=32, crop=32)
    assert card.config.num_segments == SEGMENTS and card.config.shift_div == 8
    fresh = build_from_card(card)
    info = load_checkpoint(fresh, result.checkpoint)
    assert info.format == "tsmindex" and info.card == card
    assert info.extra["step"] == 12
    for key, value in model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key])

    # The TorchServe archive build takes it too.
    mar = build_archive(model, card, tmp_path / "mar", model_name="tiny")
    assert read_manifest(mar)["model"]["modelName"] == "tiny"  # type: ignore[index]

    # The shipped form: fp16 on disk, loaded back into an fp32 network.
    half = tmp_path / "half.pt"
    export_half(result.checkpoint, half)
    assert half.stat().st_size < 0.6 * result.checkpoint.stat().st_size
    stored = torch.load(half, weights_only=True)["state_dict"]
    assert stored["new_fc.weight"].dtype == torch.float16
    loaded, _ = load_model(half)
    assert loaded.new_fc.weight.dtype == torch.float32
    torch.testing.assert_close(loaded.new_fc.weight, model.new_fc.weight, atol=1e-3, rtol=1e-3)


def test_resume_continues_the_step_count_and_the_schedule(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = train(_cfg(tiny, out, max_steps=3), show_progress=False)
    assert first.step == 3
    assert read_training_state(first.checkpoint)["step"] == 3

    cfg = config_from_checkpoint(first.checkpoint)
    assert cfg.max_steps == 3 and cfg.epochs == 6
    second = train(replace(cfg, max_steps=None), resume=first.checkpoint, show_progress=False)
    assert second.step == 12 and second.epochs_done == 6

    log = _log(out)
    resume = [r for r in log if r["event"] == "resume"]
    assert len(resume) == 1 and resume[0]["step"] == 3
    steps = [r for r in log if r["event"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, 13))
    # 2 steps per epoch: step 4 is the second half of epoch 2, where the first run stopped.
    assert [r["epoch"] for r in steps] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    peak = cfg.resolved["lr"]
    warmup = max(1, int(0.15 * 12))
    for r in steps:
        assert math.isclose(r["lr"], peak * warmup_cosine(r["step"], 12, warmup), rel_tol=1e-9, abs_tol=1e-12)


def test_fine_tuning_from_a_published_checkpoint_drops_the_classifier_and_freezes_bn(
    tiny: Path, tmp_path: Path
) -> None:
    torch.manual_seed(5)
    source = build_tsm("resnet18", num_classes=3, num_segments=SEGMENTS)
    with torch.no_grad():
        for module in source.modules():  # non-trivial statistics, to see that they survive
            if isinstance(module, nn.BatchNorm2d):
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    src_card = ModelCard("src", "1", source.config, Preprocess(resize=32, crop=32), ("a", "b", "c"))
    published = tmp_path / "published.pt"
    save_tsm(published, source, src_card)

    out = tmp_path / "ft"
    result = train(_cfg(tiny, out, init=str(published), max_steps=2, dropout=0.5), show_progress=False)
    start = _log(out)[0]
    assert start["dropped"] == ["new_fc.bias", "new_fc.weight"]
    assert start["config"]["resolved"]["optimizer"] == "sgd"
    assert start["config"]["resolved"]["partial_bn"] is True

    tuned, card = load_model(result.checkpoint)
    assert card.classes == ("left", "right") and card.config.shift_div == source.config.shift_div
    bns = [name for name, m in source.named_modules() if isinstance(m, nn.BatchNorm2d)]
    before, after = source.state_dict(), tuned.state_dict()
    first_bn = bns[0]
    assert not torch.equal(before[f"{first_bn}.running_mean"], after[f"{first_bn}.running_mean"])
    for name in bns[1:]:
        for field in ("weight", "bias", "running_mean", "running_var"):
            assert torch.equal(before[f"{name}.{field}"], after[f"{name}.{field}"]), f"{name}.{field}"
    assert tuned.new_fc.weight.shape == (2, source.embedding_dim)


def test_transfer_weights_keeps_everything_but_a_differently_sized_classifier() -> None:
    source = build_tsm("resnet18", num_classes=5, num_segments=SEGMENTS)
    target = build_tsm("resnet18", num_classes=2, num_segments=SEGMENTS)
    fc_before = target.new_fc.weight.clone()
    assert transfer_weights(target, source) == ["new_fc.bias", "new_fc.weight"]
    for key, value in source.state_dict().items():
        if not key.startswith("new_fc."):
            assert torch.equal(value, target.state_dict()[key])
    assert torch.equal(target.new_fc.weight, fc_before)
    with pytest.raises(ValueError, match="layout"):
        transfer_weights(build_tsm("resnet34", num_classes=2, num_segments=SEGMENTS), source)


def test_partial_bn_leaves_only_the_first_bn_training() -> None:
    model = build_tsm("resnet18", num_classes=2, num_segments=SEGMENTS)
    model.train()
    set_partial_bn(model)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns[0].training and all(p.requires_grad for p in bns[0].parameters())
    assert not any(bn.training for bn in bns[1:])
    assert not any(p.requires_grad for bn in bns[1:] for p in bn.parameters())


def test_warmup_then_cosine() -> None:
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.0)


def test_a_causal_run_with_context_is_scored_on_its_last_frames_and_ships_their_count(tmp_path: Path) -> None:
    from workers.training.motion import DIRECTION_CLASSES, make_stream_dataset
    from workers.training.train import LastFrames

    spec = MotionSpec(classes=DIRECTION_CLASSES, size=32, frames=SEGMENTS)
    data = make_stream_dataset(tmp_path / "windows", count=8, seed=5, spec=spec, context=SEGMENTS)
    with pytest.raises(ValueError, match="causal"):
        train(_cfg(data, tmp_path / "bidir", context=SEGMENTS, max_steps=1), show_progress=False)
    result = train(
        _cfg(data, tmp_path / "run", causal=True, context=SEGMENTS, epochs=1, arch="mobilenet_v2"),
        show_progress=False,
    )
    model, card = load_model(result.checkpoint)
    assert card.config.causal and card.config.num_segments == 2 * SEGMENTS  # what it ran on

    # Only the last frames count: changing the context's logits cannot move the score.
    scored = LastFrames(model.eval(), SEGMENTS)
    x = torch.randn(2, 2 * SEGMENTS, 3, 32, 32)
    with torch.no_grad():
        per_frame = model.forward_frames(x)[0]
        torch.testing.assert_close(scored(x), per_frame[:, SEGMENTS:].mean(1))

    shipped = export_half(result.checkpoint, tmp_path / "half.pt")
    assert shipped.config.causal and shipped.config.num_segments == SEGMENTS  # the frames watch averages
    loaded, card = load_model(tmp_path / "half.pt")
    assert card == shipped
    torch.testing.assert_close(loaded.new_fc.weight, model.new_fc.weight, atol=1e-3, rtol=1e-3)
