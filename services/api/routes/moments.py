"""Moments: where in the indexed videos a label happens, one time window per hit."""

from __future__ import annotations

from fastapi import APIRouter

from services.api.deps import ApiKeyDep, SearchDep, SessionDep
from services.api.schemas import ModelRef, MomentHit, MomentPage
from services.core import search

router = APIRouter(prefix="/v1/moments", tags=["search"])


@router.get("")
def search_moments(session: SessionDep, _key: ApiKeyDep, params: SearchDep) -> MomentPage:
    """Time windows whose label `label` scores at least `min_score`, best first, each with its video
    and its start and end (ms). Windows keep their top labels only (the job's `top_k`)."""
    rows, next_cursor = search.split_page(session.execute(search.moment_hits(params)).all(), params)
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
        for window, video in rows
    ]
    return MomentPage(items=items, next_cursor=next_cursor)
