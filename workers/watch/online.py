"""The online (uni-directional) TSM of the paper's section 4.2 as a running label: one frame in, the
label of the last ``window`` frames out, with the time the frame took."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from model_store.tsm import TSM, ModelCard, OnlineTSM
from workers.training.datasets import normalise


@dataclass(frozen=True)
class FrameLabel:
    label: str
    index: int  # class index
    score: float  # probability of the mean logits over the window
    latency_s: float  # preprocessing + one online step + the window's mean, wall clock
    cpu_s: float  # the same in CPU time of this process: what it costs on a core of its own


class OnlineClassifier:
    """Runs ``OnlineTSM`` frame by frame and averages the last ``window`` frames' logits, as the
    offline network averages its segments (the default window is the card's segment count).

    A model trained with the bi-directional shift runs too, but it never sees the future frames it
    was trained with; ``card.config.causal`` says which kind a model is.
    """

    def __init__(self, model: TSM, card: ModelCard, *, window: int | None = None, bf16: bool = False) -> None:
        self.card = card
        self.window = window or card.config.num_segments
        self.bf16 = bf16
        self.online = OnlineTSM.from_offline(model).eval().to(memory_format=torch.channels_last)
        self.stream = self.online.new_stream()
        self._logits: deque[torch.Tensor] = deque(maxlen=self.window)

    @torch.inference_mode()
    def step(self, rgb: np.ndarray) -> FrameLabel:
        """One uint8 RGB frame ``[H, W, 3]`` (already resized and cropped for the model)."""
        started, cpu = time.perf_counter(), time.process_time()
        x = normalise(torch.from_numpy(rgb)[None, None], self.card.preprocess)[:, 0]  # [1, 3, H, W]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            logits, _ = self.online.step(x, self.stream)
        self._logits.append(logits[0].float())
        probs = torch.softmax(torch.stack(tuple(self._logits)).mean(0), dim=0)
        score, index = probs.max(0)
        label = self.card.classes[int(index)]
        return FrameLabel(
            label, int(index), float(score), time.perf_counter() - started, time.process_time() - cpu
        )
