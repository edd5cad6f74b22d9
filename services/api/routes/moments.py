"""Moments: where in the indexed videos a label happens, one run of consecutive windows per hit."""

from __future__ import annotations

from fastapi import APIRouter

from services.api.deps import SearchDep, SessionDep
from services.api.guard import ReadDep
from services.api.routes.windows import thumbnail_url
from services.api.schemas import ModelRef, MomentHit, MomentPage
from services.core import search
from services.core.models import Video
from services.core.tenancy import scoped

router = APIRouter(prefix="/v1/moments", tags=["search"])


@router.get("")
def search_moments(session: SessionDep, caller: ReadDep, params: SearchDep) -> MomentPage:
    """Where `label` happens: runs of consecutive windows that each have it among their top labels
    (the job's `top_k`), ranked by their best window's score, with start and end (ms). Repeat
    `label` for several (`match=any|all`); `start_s`/`end_s` keep the moments overlapping that span."""
    query = scoped(search.moment_hits(params), Video.tenant_id, caller.sees)
    rows, next_cursor = search.split_page(session.execute(query).all(), params)
    items = [
        MomentHit(
            id=segment.id,
            video_id=video.id,
            filename=video.filename,
            label=segment.label,
            start_ms=segment.start_ms,
            end_ms=segment.end_ms,
            windows=segment.windows,
            score=segment.score,
            mean_score=segment.mean_score,
            peak_window=segment.peak_window,
            model=ModelRef(name=segment.model_name, version=segment.model_version),
            thumbnail_url=thumbnail_url(video.id, segment.peak_window, segment.model_version),
        )
        for segment, video in rows
    ]
    return MomentPage(items=items, next_cursor=next_cursor)
