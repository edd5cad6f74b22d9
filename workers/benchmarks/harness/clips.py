"""Small generated clips, each with bytes of its own (the platform dedupes equal bytes)."""

from __future__ import annotations

import itertools
from pathlib import Path

from workers.media.synth import make_video

FPS = 8.0


class ClipMaker:
    """Writes clips into ``directory``; each gets a frame size no other clip of this maker has."""

    def __init__(self, directory: Path, *, first: int = 0):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._numbers = itertools.count(first)

    def make(self, seconds: float) -> Path:
        n = next(self._numbers)
        # Even sizes (4:2:0 chroma), 40 widths by as many heights as needed.
        size = (64 + 2 * (n % 40), 48 + 2 * (n // 40))
        return make_video(
            self.directory / f"clip-{n}.mp4", frames=max(1, round(seconds * FPS)), fps=FPS, size=size
        )
