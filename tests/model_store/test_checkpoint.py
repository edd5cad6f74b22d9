"""Checkpoints: each published key layout written here by hand, loaded back, and the mismatch messages."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from model_store.tsm import (
    KINETICS400_LABELS_PATH,
    TSM,
    CheckpointError,
    ModelCard,
    Preprocess,
    build_tsm,
    load_checkpoint,
    load_model,
    parse_official_filename,
    read_labels,
    save_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

T = 3


def _model(
    arch: str = "resnet18",
    num_classes: int = 5,
    seed: int = 0,
    *,
    shift_div: int = 8,
    shift_place: str = "blockres",
) -> TSM:
    torch.manual_seed(seed)
    model = build_tsm(
        arch, num_classes=num_classes, num_segments=T, shift_div=shift_div, shift_place=shift_place
    )
    nn.init.normal_(model.new_fc.weight, std=0.1)
    # Non-trivial BatchNorm statistics, so that a BN tensor loaded into the wrong slot shows.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _same_outputs(a: TSM, b: TSM) -> None:
    x = torch.randn(2, T, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        la, ea = a.forward_features(x)
        lb, eb = b.forward_features(x)
    assert torch.equal(la, lb) and torch.equal(ea, eb)


def _card(model: TSM) -> ModelCard:
    n = model.config.num_classes
    return ModelCard(
        name="tiny",
        version="3",
        config=model.config,
        preprocess=Preprocess(),
        classes=tuple(map(str, range(n))),
    )


# The published layouts, written from our keys the way each code base names them.


def official_state(model: TSM) -> dict[str, Tensor]:
    """Reference TSM code under DataParallel: module.base_model.*, module.new_fc.*"""
    return {f"module.{k}": v.clone() for k, v in model.state_dict().items()}


_MNV2_OFFICIAL = {"0.0": "0", "0.1": "1", "1.0": "3", "1.1": "4", "2": "6", "3": "7"}
_MNV2_OFFICIAL_EXPAND1 = {"0.0": "0", "0.1": "1", "1": "3", "2": "4"}


def official_mobilenet_state(model: TSM) -> dict[str, Tensor]:
    """Reference archs/mobilenet_v2.py: flat conv/bn/relu Sequentials inside each block."""
    out = {}
    for k, v in model.state_dict().items():
        m = re.match(r"^base_model\.features\.(\d+)\.conv\.(\d\.\d|\d)\.(.*)$", k)
        if m:
            block, layer, rest = m.groups()
            table = _MNV2_OFFICIAL_EXPAND1 if block == "1" else _MNV2_OFFICIAL
            if rest.startswith("net."):  # the shift wraps the first conv: conv.0.net.weight
                layer = "0.0"
            k = f"base_model.features.{block}.conv.{table[layer]}.{rest}"
        out[f"module.{k}"] = v.clone()
    return out


def mmaction2_state(model: TSM) -> dict[str, Tensor]:
    """mmaction2 ResNetTSM + TSMHead: ConvModule (conv + bn) per convolution."""
    rules = [
        (r"^base_model\.conv1\.", "backbone.conv1.conv."),
        (r"^base_model\.bn1\.", "backbone.conv1.bn."),
        (r"^base_model\.(layer\d\.\d+\.(?:net\.)?)conv(\d)\.", r"backbone.\1conv\2.conv."),
        (r"^base_model\.(layer\d\.\d+\.(?:net\.)?)bn(\d)\.", r"backbone.\1conv\2.bn."),
        (r"^base_model\.(layer\d\.\d+\.(?:net\.)?)downsample\.0\.", r"backbone.\1downsample.conv."),
        (r"^base_model\.(layer\d\.\d+\.(?:net\.)?)downsample\.1\.", r"backbone.\1downsample.bn."),
        (r"^new_fc\.", "cls_head.fc_cls."),
    ]
    out = {}
    for k, v in model.state_dict().items():
        for pattern, repl in rules:
            k, n = re.subn(pattern, repl, k)
            if n:
                break
        else:
            raise AssertionError(f"no mmaction2 name for {k}")
        out[k] = v.clone()
    return out


def test_official_and_mmaction2_names_match_the_published_examples() -> None:
    model = _model("resnet50", num_classes=400)
    official = official_state(model)
    assert {
        "module.base_model.conv1.weight",
        "module.base_model.layer1.0.conv1.net.weight",
        "module.base_model.layer1.0.downsample.0.weight",
        "module.new_fc.weight",
    } <= official.keys()
    mm = mmaction2_state(model)
    assert {
        "backbone.conv1.conv.weight",
        "backbone.layer1.0.conv1.conv.net.weight",
        "backbone.layer1.0.conv1.bn.weight",
        "backbone.layer1.0.conv3.bn.running_var",
        "backbone.layer1.0.downsample.conv.weight",
        "backbone.layer1.0.downsample.bn.weight",
        "cls_head.fc_cls.weight",
    } <= mm.keys()


def test_our_format_round_trip(tmp_path: Path) -> None:
    model = _model()
    card = _card(model)
    path = tmp_path / "nested" / "tiny.pt"
    save_checkpoint(path, model, card, extra={"epoch": 3, "top1": 0.5})
    assert [p.name for p in path.parent.iterdir()] == ["tiny.pt"]  # no temp file left
    loaded, loaded_card = load_model(path)
    assert loaded_card == card and not loaded.training
    _same_outputs(model, loaded)
    fresh = _model(seed=1)
    info = load_checkpoint(fresh, path)
    assert info.format == "tsmindex" and info.card == card and info.extra == {"epoch": 3, "top1": 0.5}
    _same_outputs(model, fresh)


def test_save_refuses_a_card_for_another_network(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not describe the model"):
        save_checkpoint(tmp_path / "x.pt", _model(), _card(_model(num_classes=4)))


@pytest.mark.parametrize(
    ("arch", "place", "layout"),
    [
        ("resnet18", "blockres", official_state),
        ("resnet18", "block", official_state),
        ("mobilenet_v2", "blockres", official_mobilenet_state),
    ],
)
def test_official_round_trip(tmp_path: Path, arch: str, place: str, layout: object) -> None:
    model = _model(arch, shift_place=place)
    path = tmp_path / "official.pth.tar"
    state = layout(model)  # type: ignore[operator]
    # What the reference training script saves.
    torch.save({"epoch": 50, "arch": arch.replace("_", ""), "state_dict": state, "best_prec1": 71.2}, path)
    fresh = _model(arch, seed=1, shift_place=place)
    info = load_checkpoint(fresh, path)
    assert info.format == "official" and info.card is None
    _same_outputs(model, fresh)


def test_checkpoints_without_batchnorm_step_counters_load(tmp_path: Path) -> None:
    # Files saved before PyTorch 0.4.1 have no num_batches_tracked; inference does not use it.
    model = _model()
    state = {k: v for k, v in official_state(model).items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save({"state_dict": state}, path)
    fresh = _model(seed=1)
    load_checkpoint(fresh, path)
    _same_outputs(model, fresh)


@pytest.mark.parametrize("place", ["blockres", "block"])
def test_mmaction2_round_trip(tmp_path: Path, place: str) -> None:
    model = _model(shift_place=place)
    path = tmp_path / "tsm_r18_mmaction2.pth"
    state = mmaction2_state(model)
    state["data_preprocessor.mean"] = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1, 1)
    torch.save({"meta": {"mmaction2_version": "1.2.0"}, "state_dict": state}, path)
    fresh = _model(seed=1, shift_place=place)
    assert load_checkpoint(fresh, path).format == "mmaction2"
    _same_outputs(model, fresh)


def test_official_file_name_gives_a_kinetics_model(tmp_path: Path) -> None:
    model = _model(num_classes=400)
    path = tmp_path / "TSM_kinetics_RGB_resnet18_shift8_blockres_avg_segment3_e50.pth"
    torch.save({"state_dict": official_state(model)}, path)
    loaded, card = load_model(path)
    assert card.config == model.config
    assert card.classes == read_labels(KINETICS400_LABELS_PATH)
    assert card.name == "TSM_kinetics_RGB_resnet18_shift8_blockres_avg_segment3_e50"
    assert card.version == hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert card.preprocess == Preprocess(resize=256, crop=224)
    _same_outputs(model, loaded)


def test_official_file_needs_a_card_when_the_name_says_nothing(tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": official_state(_model())}, path)
    with pytest.raises(CheckpointError, match="pass a ModelCard"):
        load_model(path)
    model = _model()
    loaded, card = load_model(path, card=_card(model))
    assert card == _card(model)
    _same_outputs(model, loaded)


def test_parse_official_filename() -> None:
    name = parse_official_filename("TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth")
    assert (name.dataset, name.arch, name.shift_div, name.shift_place, name.num_segments, name.epochs) == (
        "kinetics",
        "resnet50",
        8,
        "blockres",
        8,
        50,
    )
    assert name.num_classes == 400 and not name.dense
    config = name.to_config(400)
    assert (config.arch, config.num_segments, config.shift_div, config.shift_place) == (
        "resnet50",
        8,
        8,
        "blockres",
    )
    mnv2 = parse_official_filename(
        "/w/TSM_kinetics_RGB_mobilenetv2_shift8_blockres_avg_segment8_e100_dense.pth"
    )
    assert (mnv2.arch, mnv2.dense, mnv2.epochs) == ("mobilenet_v2", True, 100)
    tsn = parse_official_filename("TSM_somethingv2_RGB_resnet50_avg_segment16_e45.pth")
    assert (tsn.shift_div, tsn.num_segments, tsn.num_classes) == (0, 16, 174)
    with pytest.raises(ValueError, match="non-local"):
        parse_official_filename("TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e100_dense_nl.pth")
    with pytest.raises(ValueError, match="not an official TSM checkpoint name"):
        parse_official_filename("resnet50.pth")


def _error(model: TSM, path: Path) -> str:
    with pytest.raises(CheckpointError) as excinfo:
        load_checkpoint(model, path)
    return str(excinfo.value)


def test_mismatch_names_the_class_count(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save({"state_dict": official_state(_model(num_classes=10))}, path)
    message = _error(_model(num_classes=5), path)
    assert "likely cause: class count: the checkpoint has 10 classes, the model 5" in message
    assert "new_fc.weight checkpoint [10, 512] vs model [5, 512]" in message
    assert "missing keys" not in message


def test_mismatch_names_the_arch_and_keys(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save(mmaction2_state(_model("resnet18")), path)  # a bare state dict is accepted too
    message = _error(_model("resnet34"), path)
    assert "likely cause: wrong arch: the checkpoint looks like resnet18, the model is resnet34" in message
    assert "missing keys (96): base_model.layer1.2.bn1.bias, " in message
    assert "unexpected keys" not in message


def test_mismatch_names_the_shift_setting(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save({"state_dict": official_state(_model())}, path)
    message = _error(_model(shift_div=0), path)
    assert (
        "likely cause: shift setting: the checkpoint has residual-branch shift (blockres), "
        "the model no shift (shift_div=0)"
    ) in message
    assert "unexpected keys (8): base_model.layer1.0.conv1.net.weight" in message
    assert "missing keys (8): base_model.layer1.0.conv1.weight" in message


def test_mismatch_names_the_segments(tmp_path: Path) -> None:
    model = _model()
    ours = tmp_path / "ours.pt"
    save_checkpoint(ours, model, _card(model))
    other = build_tsm("resnet18", num_classes=5, num_segments=8)
    assert "num_segments: checkpoint 3, model 8" in _error(other, ours)
    official = tmp_path / "TSM_kinetics_RGB_resnet18_shift8_blockres_avg_segment3_e50.pth"
    torch.save({"state_dict": official_state(model)}, official)
    assert "num_segments: checkpoint 3, model 8" in _error(other, official)


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(Path(__file__).parent / "PWNED"),))


def test_loading_never_runs_pickled_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": official_state(_model()), "trap": _Payload()}, path)
    message = _error(_model(), path)
    assert "not a readable weights-only checkpoint" in message
    assert not (Path(__file__).parent / "PWNED").exists()


def test_unknown_layouts_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}}, path)
    assert "unrecognised checkpoint layout" in _error(_model(), path)
