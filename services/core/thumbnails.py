"""Window thumbnails: one JPEG per window, a frame the model saw, kept in object storage.

The frame is the clip's middle one (already resized and centre-cropped as the model saw it), so a
search hit can be checked at a glance without playing the video. Keys are per job: windows depend
on the job's window length, and a re-run overwrites the same keys.
"""

from __future__ import annotations

import io
import uuid

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.core.models import IndexedWindow
from services.core.storage import ObjectStorage

JPEG_QUALITY = 85
CONTENT_TYPE = "image/jpeg"


def thumbnail_key(job_id: uuid.UUID, window_index: int) -> str:
    return f"thumbnails/{job_id}/{window_index:06d}.jpg"


def encode_jpeg(frames: np.ndarray) -> bytes:
    """The middle frame of a uint8 ``[T, H, W, 3]`` RGB clip as JPEG bytes."""
    from PIL import Image

    frame = frames[len(frames) // 2]  # [H, W, 3]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def thumbnail_keys(session: Session, video_id: uuid.UUID) -> list[str]:
    """The stored thumbnails of a video's windows, under every model version (to delete them)."""
    query = select(IndexedWindow.thumbnail_key).where(
        IndexedWindow.video_id == video_id, IndexedWindow.thumbnail_key.is_not(None)
    )
    return [key for key in session.scalars(query) if key is not None]


def store_thumbnail(
    storage: ObjectStorage, *, job_id: uuid.UUID, window_index: int, frames: np.ndarray
) -> str:
    """Write the window's thumbnail; returns its key."""
    key = thumbnail_key(job_id, window_index)
    storage.put_bytes(key, encode_jpeg(frames), content_type=CONTENT_TYPE)
    return key
