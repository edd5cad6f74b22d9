"""Limits a file must stay within, and the wall-clock budget that keeps decoding from hanging."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from workers.media.errors import DecodeTimeoutError


@dataclass(frozen=True)
class MediaLimits:
    """Per-file limits; the defaults mirror ``services.core.config.Settings`` (callers pass theirs)."""

    max_pixels_per_frame: int = 7680 * 4320
    max_duration_s: float = 6 * 3600.0
    max_upload_bytes: int = 2 * 1024**3
    decode_budget_s: float = 300.0
    # Chosen frames that may fail to decode (each replaced by its window's nearest decoded frame)
    # before the video counts as corrupt, as a fraction of all chosen frames.
    max_shortfall_fraction: float = 0.25


@dataclass
class Deadline:
    """A wall-clock budget, checked inside every demux and decode loop."""

    budget_s: float
    started: float = field(default_factory=time.monotonic)

    @property
    def remaining_s(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    def check(self) -> None:
        if time.monotonic() - self.started > self.budget_s:
            raise DecodeTimeoutError(f"decoding exceeded its budget of {self.budget_s:g} s")
