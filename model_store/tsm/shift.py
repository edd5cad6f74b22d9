"""The temporal shift of "TSM: Temporal Shift Module for Efficient Video Understanding" (Lin et al. 2019)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def temporal_shift(x: Tensor, num_segments: int, shift_div: int, *, causal: bool = False) -> Tensor:
    """Shift part of the channels of ``x`` [N*T, C, H, W] along time; same shape back.

    With fold = C // shift_div, channels [0, fold) take frame t+1's values and channels
    [fold, 2*fold) take frame t-1's; zeros enter at the clip ends; the rest stay. ``causal`` keeps
    only the past direction (channels [0, fold) are zero, as at the last frame of a clip), which is
    what a streaming model that has not seen frame t+1 computes.

    Slice copies rather than ``torch.roll`` plus masks: one read and one write of the tensor, no
    data-dependent shapes, and it exports to ONNX with the batch dimension left dynamic. Only the
    clip-end slices are zero-filled: zero-filling the whole output first costs a third more memory
    traffic, which is most of the shift's cost on CPU.
    """
    nt, c, h, w = x.shape
    fold = c // shift_div
    x5 = x.view(-1, num_segments, c, h, w)  # [N, T, C, H, W]
    out = torch.empty_like(x5)  # keeps channels_last strides
    if causal:
        out[:, :, :fold] = 0
    else:
        out[:, :-1, :fold] = x5[:, 1:, :fold]  # from the future
        out[:, -1:, :fold] = 0
    out[:, 1:, fold : 2 * fold] = x5[:, :-1, fold : 2 * fold]  # from the past
    out[:, :1, fold : 2 * fold] = 0
    out[:, :, 2 * fold :] = x5[:, :, 2 * fold :]
    return out.view(nt, c, h, w)


class TemporalShift(nn.Module):
    """Shift the input in time, then run ``net``.

    The wrapped module is stored as ``net``, as in the reference implementation, so published
    checkpoints keep their keys (``layer1.0.conv1.net.weight``).
    """

    def __init__(self, net: nn.Module, *, num_segments: int, shift_div: int, causal: bool = False) -> None:
        super().__init__()
        self.net = net
        self.num_segments = num_segments
        self.shift_div = shift_div
        self.causal = causal

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(temporal_shift(x, self.num_segments, self.shift_div, causal=self.causal))
        return out

    def extra_repr(self) -> str:
        return f"num_segments={self.num_segments}, shift_div={self.shift_div}, causal={self.causal}"
