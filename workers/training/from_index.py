"""From the index back to training: the moments of some labels written as a labelled clip dataset.

Each moment (a run of windows that kept its label, at or above a score) becomes one H.264 clip of
its time span, scaled so its shorter side is ``short_side`` pixels, under ``<out>/<label>/``, and a
``labels.csv`` of (path, label) that ``tsmindex train`` reads (``workers.training.datasets``). Every
video is fetched and decoded once however many of its moments are kept."""

from __future__ import annotations

import re
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.core.config import Settings
from services.core.models import LabelSegment, Video
from services.core.storage import (
    ObjectNotFoundError,
    download_s3_object,
    file_uri_path,
    make_storage,
    parse_s3_uri,
    s3_client,
)
from services.core.versions import ModelVersion
from workers.training.motion import LABELS_FILE, write_labels_csv


@dataclass(frozen=True)
class IndexedMoment:
    video_id: uuid.UUID
    storage_key: str | None
    source_uri: str | None
    label: str
    start_ms: int
    end_ms: int
    score: float


def find_moments(
    session: Session,
    *,
    labels: Sequence[str],
    min_score: float,
    model: ModelVersion | None = None,
    limit: int | None = None,
) -> list[IndexedMoment]:
    """The moments of ``labels`` scoring at least ``min_score``, grouped by video, in time order."""
    query = (
        select(LabelSegment, Video)
        .join(Video, Video.id == LabelSegment.video_id)
        .where(LabelSegment.label.in_(labels), LabelSegment.score >= min_score)
        .order_by(LabelSegment.score.desc(), LabelSegment.id)
    )
    if model is not None:
        query = query.where(
            LabelSegment.model_name == model.name, LabelSegment.model_version == model.version
        )
    if limit is not None:
        query = query.limit(limit)
    found = [
        IndexedMoment(v.id, v.storage_key, v.source_uri, s.label, s.start_ms, s.end_ms, s.score)
        for s, v in session.execute(query).tuples()
    ]
    return sorted(found, key=lambda m: (str(m.video_id), m.start_ms, m.label))


def fetch_video(settings: Settings, moment: IndexedMoment, tmp: Path) -> Path:
    """The indexed video as a local file: our stored copy, an S3 source or a local file."""
    if moment.storage_key:
        dest = tmp / "video"
        make_storage(settings).download(moment.storage_key, dest)
        return dest
    uri = moment.source_uri or ""
    if uri.startswith("file://"):
        return file_uri_path(uri)
    if uri.startswith("s3://"):
        dest = tmp / "video"
        download_s3_object(s3_client(settings), *parse_s3_uri(uri), dest)
        return dest
    raise ObjectNotFoundError(f"video {moment.video_id} has no readable source ({uri!r})")


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", label).strip("_") or "label"


def _scaled(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the shorter side ``short_side``, both even (yuv420p needs it)."""
    scale = short_side / min(width, height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def cut_clips(src: Path, spans: Sequence[tuple[Path, int, int]], *, short_side: int) -> list[int]:
    """Decode ``src`` once and encode each (dest, start_ms, end_ms) span of it; frames per clip."""
    import av

    order = sorted(range(len(spans)), key=lambda i: spans[i][1])
    written = [0] * len(spans)
    outputs: dict[int, tuple[Any, Any]] = {}
    with av.open(str(src)) as container:
        stream = container.streams.video[0]
        fps = stream.average_rate or 25
        size = _scaled(stream.codec_context.width, stream.codec_context.height, short_side)
        try:
            for frame in container.decode(stream):
                t_ms = (frame.time or 0.0) * 1000.0
                if t_ms >= max(end for _, _, end in spans):
                    break
                for i in order:
                    dest, start, end = spans[i]
                    if not start <= t_ms < end:
                        continue
                    if i not in outputs:
                        outputs[i] = _open_clip(dest, size, fps)
                    _encode(outputs[i], frame.reformat(width=size[0], height=size[1], format="yuv420p"))
                    written[i] += 1
        finally:
            for out in outputs.values():
                _close_clip(out)
    return written


def _open_clip(dest: Path, size: tuple[int, int], fps: Any) -> tuple[Any, Any]:
    import av

    dest.parent.mkdir(parents=True, exist_ok=True)
    container = av.open(str(dest), mode="w")
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": "18", "preset": "veryfast"}
    return container, stream


def _encode(clip: tuple[Any, Any], frame: Any) -> None:
    container, stream = clip
    frame.pts = None  # the encoder numbers frames at the clip's rate
    for packet in stream.encode(frame):
        container.mux(packet)


def _close_clip(clip: tuple[Any, Any]) -> None:
    container, stream = clip
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def write_dataset(
    settings: Settings,
    moments: Sequence[IndexedMoment],
    out: Path,
    *,
    short_side: int = 256,
    on_video: Callable[[int], None] | None = None,
) -> tuple[Path, int]:
    """Write each moment as ``<out>/<label>/<video>_<start_ms>.mp4`` and ``<out>/labels.csv``; returns
    the CSV's path and the clips written (a moment whose span holds no frame is left out)."""
    rows: list[tuple[str, str]] = []
    for _, group in groupby(moments, key=lambda m: m.video_id):
        video_moments = list(group)
        rels = [f"{_slug(m.label)}/{m.video_id.hex[:12]}_{m.start_ms:09d}.mp4" for m in video_moments]
        with tempfile.TemporaryDirectory() as tmp:
            src = fetch_video(settings, video_moments[0], Path(tmp))
            frames = cut_clips(
                src,
                [(out / r, m.start_ms, m.end_ms) for r, m in zip(rels, video_moments, strict=True)],
                short_side=short_side,
            )
        rows += [(r, m.label) for r, m, n in zip(rels, video_moments, frames, strict=True) if n > 0]
        if on_video is not None:
            on_video(len(video_moments))
    out.mkdir(parents=True, exist_ok=True)
    return write_labels_csv(out / LABELS_FILE, rows), len(rows)
