"""Online TSM: frame-by-frame streaming equals the causal offline network; its cache size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model_store.tsm import TSM, CacheSize, OnlineTSM, build_tsm

pytestmark = pytest.mark.usefixtures("one_torch_thread")

T = 4


def _offline(arch: str, place: str, mode: str) -> TSM:
    torch.manual_seed(0)
    model = build_tsm(arch, num_classes=6, num_segments=T, shift_place=place, mode=mode)  # type: ignore[call-overload]
    assert isinstance(model, TSM)
    nn.init.normal_(model.new_fc.weight, std=0.1)
    # Fresh BatchNorm statistics (mean 0, var 1) make MobileNetV2's features vanish (~1e-9), which
    # would make any tolerance vacuous: take them from one batch instead.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        model.train()(torch.randn(2, T, 3, 32, 32, generator=torch.Generator().manual_seed(9)))
    return model.eval()


@pytest.mark.parametrize(
    ("arch", "place"), [("resnet18", "blockres"), ("resnet18", "block"), ("mobilenet_v2", "blockres")]
)
@torch.no_grad()
def test_streaming_equals_causal_offline_per_frame(arch: str, place: str) -> None:
    causal = _offline(arch, place, "causal")
    online = OnlineTSM.from_offline(causal).eval()
    clips = torch.randn(2, T, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    want_logits, want_feats = causal.forward_frames(clips)  # [N, T, K], [N, T, D]

    stream = online.new_stream()
    for t in range(T):
        logits, feats = online.step(clips[:, t], stream)
        torch.testing.assert_close(feats, want_feats[:, t], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(logits, want_logits[:, t], rtol=1e-4, atol=1e-5)
    assert stream.frames_seen == T

    # The bi-directional network sees the future, so it differs on every frame but the last.
    bidir = _offline(arch, place, "offline")
    bidir_feats = bidir.forward_frames(clips)[1]
    for t in range(T - 1):
        assert not torch.allclose(bidir_feats[:, t], want_feats[:, t], atol=1e-3)


@torch.no_grad()
def test_streams_are_independent() -> None:
    online = OnlineTSM.from_offline(_offline("resnet18", "blockres", "causal"))
    frames = torch.randn(T, 2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    both, first = online.new_stream(), online.new_stream()
    for t in range(T):
        joint = online.step(frames[t], both)[1]
        alone = online.step(frames[t, :1], first)[1]
        torch.testing.assert_close(joint[:1], alone, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="stream holds 2 streams, got a batch of 1"):
        online.step(frames[0, :1], both)


def test_online_shares_the_offline_weights_layout() -> None:
    offline = _offline("resnet18", "blockres", "offline")
    online = build_tsm("resnet18", num_classes=6, num_segments=T, mode="online")
    assert isinstance(online, OnlineTSM)
    assert {k: v.shape for k, v in online.state_dict().items()} == {
        k: v.shape for k, v in offline.state_dict().items()
    }


def test_cache_size_per_stream() -> None:
    online = OnlineTSM.from_offline(_offline("resnet18", "blockres", "causal")).eval()
    # ResNet-18 at 64 px: each block caches C_in // 8 channels of its input at its input size.
    # layer1: 2 x 64ch @16x16, layer2: 64ch @16x16 + 128ch @8x8, layer3: 128 @8x8 + 256 @4x4,
    # layer4: 256 @4x4 + 512 @2x2.
    elements = 2 * 8 * 256 + (8 * 256 + 16 * 64) + (16 * 64 + 32 * 16) + (32 * 16 + 64 * 4)
    assert elements == 9472
    assert online.cache_size(height=64, width=64) == CacheSize(elements=elements, bytes=4 * elements)
    assert online.cache_size(height=64, width=64, dtype=torch.bfloat16).bytes == 2 * elements
    stream = online.new_stream()
    with torch.inference_mode():
        online.step(torch.zeros(3, 3, 64, 64), stream)
    assert stream.cache_elements() == elements and stream.cache_bytes() == 4 * elements
