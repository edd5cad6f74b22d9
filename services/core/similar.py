"""Search by example: the windows most like a moment, a window, or a clip a person brings.

A moment is represented by its best window's embedding; a window by its own; a clip is sampled as
one window and embedded by the model that indexed the archive (``ClipEmbedder``, provided by the
process that has the model: the API's entry point or the CLI, since this package never imports
the workers). The query window itself is left out of its own answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.core.models import IndexedWindow, LabelSegment, Video
from services.core.vectors import ModelKey, Neighbour, WindowRef, embedding_of, vector_store


class SimilarError(Exception):
    """Base of the errors a similarity query answers with."""


class QueryNotFoundError(SimilarError):
    """The moment or window asked about does not exist."""


class NoEmbeddingError(SimilarError):
    """The window exists but was indexed without an embedding."""


class QueryClipError(SimilarError):
    """The uploaded clip cannot be sampled (not a video, damaged, empty)."""


class EmbedderUnavailableError(SimilarError):
    """The model that embeds clips cannot be reached now; retry later."""


class ClipEmbedder(Protocol):
    def __call__(self, path: Path) -> tuple[ModelKey, np.ndarray]:
        """The clip at ``path`` sampled as one window: the model that embedded it and the vector.
        Raises ``QueryClipError`` or ``EmbedderUnavailableError``."""
        ...


@dataclass(frozen=True)
class SimilarHit:
    neighbour: Neighbour
    model: ModelKey
    filename: str | None


def _hits(
    session: Session, model: ModelKey, neighbours: Sequence[Neighbour], tenant_id: uuid.UUID | None
) -> list[SimilarHit]:
    """The neighbours with their filenames; only ``tenant_id``'s videos when given (so a tenant may
    get fewer than ``k``: the nearest are found first, then another tenant's are left out)."""
    ids = {n.video_id for n in neighbours}
    query = select(Video.id, Video.filename).where(Video.id.in_(ids))
    if tenant_id is not None:
        query = query.where(Video.tenant_id == tenant_id)
    names = dict(session.execute(query).tuples().all())
    return [SimilarHit(n, model, names.get(n.video_id)) for n in neighbours if n.video_id in names]


def _owned(session: Session, video_id: uuid.UUID, tenant_id: uuid.UUID | None) -> bool:
    owner = session.scalar(select(Video.tenant_id).where(Video.id == video_id))
    return owner is not None and tenant_id in (None, owner)


def similar_to_vector(
    session: Session, *, model: ModelKey, vector: np.ndarray, k: int, tenant_id: uuid.UUID | None = None
) -> list[SimilarHit]:
    """The ``k`` windows most like ``vector`` among those ``model`` indexed, best first."""
    neighbours = vector_store(session).nearest(session, model=model, query=vector, k=k)
    return _hits(session, model, neighbours, tenant_id)


def similar_to_window(
    session: Session,
    *,
    video_id: uuid.UUID,
    window_index: int,
    model_version: str | None,
    k: int,
    tenant_id: uuid.UUID | None = None,
) -> list[SimilarHit]:
    """The ``k`` windows most like this one (under the latest model that indexed it by default)."""
    if not _owned(session, video_id, tenant_id):
        raise QueryNotFoundError(f"no video {video_id}")
    query = select(IndexedWindow).where(
        IndexedWindow.video_id == video_id, IndexedWindow.window_index == window_index
    )
    if model_version is not None:
        query = query.where(IndexedWindow.model_version == model_version)
    window = session.scalars(query.order_by(IndexedWindow.id.desc()).limit(1)).first()
    if window is None:
        raise QueryNotFoundError(f"video {video_id} has no window {window_index}")
    return _like(
        session,
        ModelKey(window.model_name, window.model_version),
        WindowRef(video_id, window_index),
        k,
        tenant_id,
    )


def similar_to_moment(
    session: Session, *, moment_id: int, k: int, tenant_id: uuid.UUID | None = None
) -> list[SimilarHit]:
    """The ``k`` windows most like this moment's best window."""
    moment = session.get(LabelSegment, moment_id)
    if moment is None or not _owned(session, moment.video_id, tenant_id):
        raise QueryNotFoundError(f"no moment {moment_id}")
    model = ModelKey(moment.model_name, moment.model_version)
    index = moment.peak_window
    if index is None:  # indexed before windows were kept: the window where it starts
        index = session.scalar(
            select(IndexedWindow.window_index).where(
                IndexedWindow.video_id == moment.video_id,
                IndexedWindow.model_name == model.name,
                IndexedWindow.model_version == model.version,
                IndexedWindow.start_ms == moment.start_ms,
            )
        )
        if index is None:
            raise NoEmbeddingError(f"moment {moment_id} was indexed without window embeddings")
    return _like(session, model, WindowRef(moment.video_id, index), k, tenant_id)


def _like(
    session: Session, model: ModelKey, window: WindowRef, k: int, tenant_id: uuid.UUID | None
) -> list[SimilarHit]:
    vector = embedding_of(session, model=model, window=window)
    if vector is None:
        raise NoEmbeddingError(f"window {window.window_index} of video {window.video_id} has no embedding")
    store = vector_store(session)
    return _hits(
        session, model, store.nearest(session, model=model, query=vector, k=k, exclude=window), tenant_id
    )
