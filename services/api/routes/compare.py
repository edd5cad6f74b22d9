"""Compare two model versions over the indexed videos: labels gained and lost, moments moved."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError

from services.api.deps import SessionDep
from services.api.guard import ReadDep
from services.api.schemas import (
    ComparisonOut,
    ModelRef,
    MomentOut,
    MomentSpan,
    MovedMomentOut,
    VideoChangeOut,
)
from services.core.compare import Comparison, Moment, VideoChange, compare_versions
from services.core.versions import ModelVersion, ModelVersionError

router = APIRouter(prefix="/v1/compare", tags=["models"])


def _version(text: str, field: str) -> ModelVersion:
    try:
        return ModelVersion.parse(text)
    except ModelVersionError as exc:
        # Shaped like FastAPI's own validation errors, as the OpenAPI description says.
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("query", field), "msg": f"{field}: {exc}", "input": text}]
        ) from exc


def _moment(m: Moment) -> MomentOut:
    return MomentOut(label=m.label, start_ms=m.start_ms, end_ms=m.end_ms)


def _change_out(c: VideoChange) -> VideoChangeOut:
    return VideoChangeOut(
        video_id=c.video_id,
        top_a=c.top_a,
        top_b=c.top_b,
        gained=list(c.gained),
        lost=list(c.lost),
        jaccard=c.jaccard,
        moved=[
            MovedMomentOut(
                label=m.label,
                a=MomentSpan(start_ms=m.a.start_ms, end_ms=m.a.end_ms),
                b=MomentSpan(start_ms=m.b.start_ms, end_ms=m.b.end_ms),
                start_shift_ms=m.start_shift_ms,
                end_shift_ms=m.end_shift_ms,
            )
            for m in c.moved
        ],
        appeared=[_moment(m) for m in c.appeared],
        vanished=[_moment(m) for m in c.vanished],
    )


def comparison_out(result: Comparison, limit: int) -> ComparisonOut:
    return ComparisonOut(
        a=ModelRef(name=result.a.name, version=result.a.version),
        b=ModelRef(name=result.b.name, version=result.b.version),
        compared=result.compared,
        only_a=result.only_a,
        only_b=result.only_b,
        top1_agreement=result.top1_agreement,
        mean_jaccard=result.mean_jaccard,
        moments_moved=result.moments_moved,
        changed=len(result.changes),
        videos=[_change_out(c) for c in result.changes[:limit]],
    )


@router.get("")
def compare(
    session: SessionDep,
    caller: ReadDep,
    a: Annotated[str, Query(max_length=401, description="NAME:VERSION, e.g. tsm:1")],
    b: Annotated[str, Query(max_length=401, description="NAME:VERSION, e.g. tsm:2")],
    video_id: Annotated[list[uuid.UUID] | None, Query(max_length=1000, description="only these")] = None,
    limit: Annotated[int, Query(ge=0, le=1000, description="changed videos listed")] = 100,
) -> ComparisonOut:
    """What changed from version `a` to `b` over the videos both indexed (or the `video_id`s given):
    top-1 agreement and mean Jaccard of the label sets, and per changed video the labels gained and
    lost and the moments that moved, appeared or vanished."""
    result = compare_versions(
        session, a=_version(a, "a"), b=_version(b, "b"), video_ids=video_id, tenant_id=caller.sees
    )
    return comparison_out(result, limit)
