"""Online (streaming) TSM, section 4.2 of the paper: one frame in, per-frame logits out.

Each shifted block keeps the channels [fold, 2*fold) of the previous frame's input and feeds them
to the current frame, the uni-directional shift of the paper's online demo. Run over a clip frame
by frame, it computes exactly what ``TSM`` with ``config.causal`` computes offline; it uses the same
weights (and state-dict keys) as the offline network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model_store.tsm.config import TSMConfig
from model_store.tsm.network import TSM, build_backbone


class OnlineShift(nn.Module):
    """Replace channels [fold, 2*fold) by the previous frame's, zero [0, fold), then run ``net``."""

    def __init__(self, net: nn.Module, *, shift_div: int) -> None:
        super().__init__()
        self.net = net
        self.shift_div = shift_div
        # The stream's cached channels for this block; set by OnlineTSM.step for one call only.
        self.cache: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:  # [N, C, H, W], one frame per stream
        fold = x.shape[1] // self.shift_div
        past = self.cache if self.cache is not None else torch.zeros_like(x[:, fold : 2 * fold])
        # The future half of the offline shift is unknown online: zero, as at a clip's last frame.
        shifted = torch.cat((torch.zeros_like(x[:, :fold]), past, x[:, 2 * fold :]), dim=1)
        # A copy, so the cache holds `fold` channels rather than the whole activation.
        self.cache = x[:, fold : 2 * fold].clone()
        out: Tensor = self.net(shifted)
        return out


@dataclass
class Stream:
    """Per-stream state: the cached channels of every shifted block (None until the first frame)."""

    caches: list[Tensor | None]
    frames_seen: int = 0
    batch: int = 0  # streams advanced together, known after the first frame

    def cache_elements(self) -> int:
        """Cached elements per stream."""
        total = sum(c.numel() for c in self.caches if c is not None)
        return total // self.batch if self.batch else 0

    def cache_bytes(self) -> int:
        """Cached bytes per stream."""
        total = sum(c.numel() * c.element_size() for c in self.caches if c is not None)
        return total // self.batch if self.batch else 0


@dataclass(frozen=True)
class CacheSize:
    elements: int
    bytes: int


class OnlineTSM(nn.Module):
    """Streaming TSM: ``step(frame [N, 3, H, W], stream) -> (logits [N, K], features [N, D])``.

    N frames are N independent streams advanced together; ``stream`` carries their caches.
    """

    def __init__(self, config: TSMConfig) -> None:
        super().__init__()
        self.config = config
        self.base_model, self.embedding_dim = build_backbone(
            config, lambda net: OnlineShift(net, shift_div=config.shift_div)
        )
        self.dropout = nn.Dropout(config.dropout)
        self.new_fc = nn.Linear(self.embedding_dim, config.num_classes)
        nn.init.normal_(self.new_fc.weight, 0.0, 0.001)
        nn.init.zeros_(self.new_fc.bias)
        self._shifts = [m for m in self.base_model.modules() if isinstance(m, OnlineShift)]

    @classmethod
    def from_offline(cls, model: TSM) -> OnlineTSM:
        """An online network with the same weights as ``model`` (copied; same keys)."""
        online = cls(model.config)
        online.load_state_dict(model.state_dict(), strict=True)
        return online.train(model.training)

    def new_stream(self) -> Stream:
        return Stream(caches=[None] * len(self._shifts))

    def step(self, frame: Tensor, stream: Stream) -> tuple[Tensor, Tensor]:
        """Advance the streams by one frame; returns per-frame (logits [N, K], features [N, D])."""
        if frame.dim() != 4 or frame.shape[1] != 3:
            raise ValueError(f"expected one frame per stream [N, 3, H, W], got {tuple(frame.shape)}")
        if stream.frames_seen and frame.shape[0] != stream.batch:
            raise ValueError(f"stream holds {stream.batch} streams, got a batch of {frame.shape[0]}")
        for shift, cache in zip(self._shifts, stream.caches, strict=True):
            shift.cache = cache
        try:
            feats: Tensor = self.base_model(frame)  # [N, D]
            stream.caches = [shift.cache for shift in self._shifts]
        finally:
            for shift in self._shifts:
                shift.cache = None
        stream.frames_seen += 1
        stream.batch = frame.shape[0]
        logits: Tensor = self.new_fc(self.dropout(feats))
        return logits, feats

    def forward(self, frame: Tensor, stream: Stream) -> tuple[Tensor, Tensor]:
        return self.step(frame, stream)

    def cache_size(self, *, height: int, width: int, dtype: torch.dtype = torch.float32) -> CacheSize:
        """Cache held per stream at this input size (found by running one blank frame)."""
        param = next(self.parameters())
        stream = self.new_stream()
        with torch.inference_mode():
            self.step(torch.zeros(1, 3, height, width, device=param.device, dtype=param.dtype), stream)
        per_element = torch.empty((), dtype=dtype).element_size()
        elements = stream.cache_elements()
        return CacheSize(elements=elements, bytes=elements * per_element)
