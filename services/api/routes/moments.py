"""Moments: where in the indexed videos a label happens, one time window per hit."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.api.deps import ApiKeyDep, SessionDep, parse_cursor
from services.api.schemas import ModelRef, MomentHit, MomentPage
from services.core import search

router = APIRouter(prefix="/v1/moments", tags=["search"])


@router.get("")
def search_moments(
    session: SessionDep,
    _key: ApiKeyDep,
    label: Annotated[str, Query(min_length=1, max_length=200)],
    min_score: Annotated[float, Query(ge=0, le=1)] = 0.0,
    model_version: Annotated[str | None, Query(max_length=200)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> MomentPage:
    """Time windows whose label `label` scores at least `min_score`, best first, each with its video
    and its start and end (ms). Windows keep their top labels only (the job's `top_k`)."""
    query = search.moment_hits(
        label,
        min_score=min_score,
        model_version=model_version,
        after=parse_cursor(cursor),
        limit=limit + 1,
    )
    rows = session.execute(query).all()
    items = [
        MomentHit(
            video_id=video.id,
            filename=video.filename,
            window_index=window.window_index,
            start_ms=window.start_ms,
            end_ms=window.end_ms,
            label=window.label,
            score=window.score,
            rank=window.rank,
            model=ModelRef(name=window.model_name, version=window.model_version),
        )
        for window, video in rows[:limit]
    ]
    return MomentPage(items=items, next_cursor=search.next_cursor(list(rows), limit))
