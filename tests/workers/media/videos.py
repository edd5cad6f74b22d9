"""Sample videos and damaged files for tests (any team may import this).

The generator lives in the product (``workers.media.synth``) so benchmarks and demos use it too;
this module adds the pytest glue and the corpus of bad files.
"""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from workers.media.synth import (
    encoder_available,
    make_audio,
    make_video,
    paint_index,
    read_index,
)

CODEC_EXTENSIONS = {"libx264": "mp4", "libx265": "mp4", "libvpx-vp9": "webm"}

__all__ = [
    "CODEC_EXTENSIONS",
    "encoder_available",
    "make_audio",
    "make_video",
    "paint_index",
    "read_index",
    "require_encoder",
    "truncated_copy",
    "write_huge_dimensions",
    "write_text_as_video",
    "write_unknown_codec",
]


def require_encoder(codec: str) -> None:
    """Skip the calling test when this PyAV build lacks ``codec``'s encoder."""
    if not encoder_available(codec):
        pytest.skip(f"PyAV here has no {codec} encoder")


def truncated_copy(source: Path, target: Path, *, keep: int) -> Path:
    """The first ``keep`` bytes of ``source`` (a download or upload cut short)."""
    target.write_bytes(source.read_bytes()[:keep])
    return target


def write_text_as_video(path: Path) -> Path:
    """A text file carrying a video's name."""
    path.write_text("this is a shopping list, not a video\n" * 64)
    return path


def write_huge_dimensions(path: Path, *, width: int = 9000, height: int = 9000) -> Path:
    """A YUV4MPEG2 file whose header declares a frame far beyond any pixel limit (data cut short)."""
    header = f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\nFRAME\n".encode()
    path.write_bytes(header + b"\x80" * 4096)
    return path


def write_unknown_codec(source: Path, target: Path) -> Path:
    """An MP4 whose H.264 sample entry is renamed to a fourcc no decoder knows."""
    data = bytearray(source.read_bytes())
    entry = data.find(b"avc1", data.find(b"stsd"))
    if data.find(b"stsd") < 0 or entry < 0:
        raise ValueError("no H.264 sample entry in the stsd box")
    data[entry : entry + 4] = b"zzzz"
    target.write_bytes(bytes(data))
    return target


def zero_packet(path: Path, target: Path, *, frame: int) -> Path:
    """A copy of ``path`` with the payload of frame ``frame``'s packet zeroed (a damaged sector)."""
    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size and p.pos is not None]
    pos, size = packets[frame]
    data = bytearray(path.read_bytes())
    data[pos : pos + size] = bytes(size)
    target.write_bytes(bytes(data))
    return target
