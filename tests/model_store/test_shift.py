"""The temporal shift, element by element, and where the network applies it."""

from __future__ import annotations

import re

import pytest
import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

from model_store.tsm import TemporalShift, build_tsm, temporal_shift

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _clips(n: int, t: int, c: int, hw: int = 2) -> Tensor:
    """Integer-valued [N*T, C, H, W]: 1000*clip + 100*(frame+1) + 10*channel + pixel (never 0)."""
    clip = torch.arange(n).view(n, 1, 1, 1) * 1000
    frame = (torch.arange(t).view(1, t, 1, 1) + 1) * 100
    channel = torch.arange(c).view(1, 1, c, 1) * 10
    pixel = torch.arange(hw * hw).view(1, 1, 1, hw * hw)
    x = (clip + frame + channel + pixel).float().view(n * t, c, hw, hw)
    # The shift writes into uninitialised memory: leave non-zero garbage for the allocator to hand
    # back, so that a missing zero fill at the clip ends shows.
    garbage = torch.full_like(x, -7.0)
    del garbage
    return x


def test_shift_pins_every_element_of_a_small_clip() -> None:
    # One clip, 3 frames, 4 channels, shift_div 4 -> fold 1: channel 0 from t+1, channel 1 from t-1.
    x = _clips(1, 3, 4, hw=1)
    got = temporal_shift(x, 3, 4).view(3, 4)
    assert got.tolist() == [
        [200, 0, 120, 130],
        [300, 110, 220, 230],
        [0, 210, 320, 330],
    ]
    causal = temporal_shift(x, 3, 4, causal=True).view(3, 4)
    assert causal.tolist() == [
        [0, 0, 120, 130],
        [0, 110, 220, 230],
        [0, 210, 320, 330],
    ]


@pytest.mark.parametrize("shift_div", [2, 4, 8])
@pytest.mark.parametrize("causal", [False, True])
def test_shift_matches_the_definition_everywhere(shift_div: int, causal: bool) -> None:
    n, t, c = 2, 4, 16
    x = _clips(n, t, c)
    got = temporal_shift(x, t, shift_div, causal=causal).view(n, t, c, -1)
    src = x.view(n, t, c, -1)
    fold = c // shift_div
    for clip in range(n):
        for frame in range(t):
            for ch in range(c):
                if ch < fold:
                    source = None if causal else frame + 1
                elif ch < 2 * fold:
                    source = frame - 1
                else:
                    source = frame
                # Clips never leak into each other: the ends get zeros, not the neighbour's frames.
                inside = source is not None and 0 <= source < t
                expected = src[clip, source, ch] if inside else torch.zeros(4)
                assert torch.equal(got[clip, frame, ch], expected), (clip, frame, ch)


def test_shift_keeps_channels_last_and_input_untouched() -> None:
    x = _clips(2, 3, 8, hw=3).contiguous(memory_format=torch.channels_last)
    before = x.clone()
    out = temporal_shift(x, 3, 4)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, before)
    assert torch.equal(out, temporal_shift(x.contiguous(), 3, 4))


def _basic_block(block: BasicBlock, x: Tensor, shift: bool) -> Tensor:
    """BasicBlock by hand; ``shift`` says whether the residual branch sees the shifted input."""
    branch_in = temporal_shift(x, 3, 8) if shift else x
    conv1 = block.conv1.net if isinstance(block.conv1, TemporalShift) else block.conv1
    out = block.relu(block.bn1(conv1(branch_in)))
    out = block.bn2(block.conv2(out))
    return torch.relu(out + x)


@torch.no_grad()
def test_blockres_shifts_the_residual_branch_only() -> None:
    model = build_tsm("resnet18", num_classes=3, num_segments=3, shift_place="blockres").eval()
    block = model.base_model.get_submodule("layer1.0")
    assert isinstance(block, BasicBlock) and isinstance(block.conv1, TemporalShift)
    x = torch.randn(6, 64, 8, 8)
    # Identity path unshifted, conv1 input shifted.
    assert torch.allclose(block(x), _basic_block(block, x, shift=True), atol=1e-5)
    assert not torch.allclose(block(x), _basic_block(block, x, shift=False), atol=1e-3)


@torch.no_grad()
def test_block_shifts_the_whole_block_input() -> None:
    model = build_tsm("resnet18", num_classes=3, num_segments=3, shift_place="block").eval()
    wrapper = model.base_model.get_submodule("layer1.0")
    assert isinstance(wrapper, TemporalShift) and isinstance(wrapper.net, BasicBlock)
    x = torch.randn(6, 64, 8, 8)
    shifted = temporal_shift(x, 3, 8)
    # Both paths, identity included, see the shifted input.
    assert torch.allclose(wrapper(x), _basic_block(wrapper.net, shifted, shift=False), atol=1e-5)


def _shifts(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, TemporalShift)]


def test_shift_positions_per_backbone() -> None:
    r18 = build_tsm("resnet18", num_classes=2)
    assert _shifts(r18) == [f"base_model.layer{s}.{b}.conv1" for s in range(1, 5) for b in range(2)]
    r18_block = build_tsm("resnet18", num_classes=2, shift_place="block")
    assert _shifts(r18_block) == [f"base_model.layer{s}.{b}" for s in range(1, 5) for b in range(2)]
    # The reference code shifts every other block of ResNet-101 (layer3 has 23 blocks).
    r101 = build_tsm("resnet101", num_classes=2)
    blocks = {1: 3, 2: 4, 3: 23, 4: 3}
    assert _shifts(r101) == [
        f"base_model.layer{s}.{b}.conv1" for s, n in blocks.items() for b in range(0, n, 2)
    ]
    # MobileNetV2: the ten inverted residual blocks with a skip connection, before their expansion.
    mnv2 = build_tsm("mobilenet_v2", num_classes=2)
    residual = [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]
    assert _shifts(mnv2) == [f"base_model.features.{i}.conv.0.0" for i in residual]
    assert _shifts(build_tsm("resnet18", num_classes=2, shift_div=0)) == []


@pytest.mark.parametrize(
    ("arch", "place"), [("resnet18", "blockres"), ("resnet18", "block"), ("mobilenet_v2", "blockres")]
)
def test_shift_adds_no_parameters(arch: str, place: str) -> None:
    shifted = build_tsm(arch, num_classes=7, shift_place=place).state_dict()
    plain = build_tsm(arch, num_classes=7, shift_div=0).state_dict()
    # Same tensors; only the wrapper's `.net` differs in the names.
    assert {re.sub(r"\.net\.", ".", k): tuple(v.shape) for k, v in shifted.items()} == {
        k: tuple(v.shape) for k, v in plain.items()
    }
    assert sum(v.numel() for v in shifted.values()) == sum(v.numel() for v in plain.values())
