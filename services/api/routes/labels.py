"""The label vocabulary of the index, and lookup by what a person types."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.api.deps import SessionDep
from services.api.guard import ReadDep
from services.api.schemas import LabelCount, LabelsOut
from services.core import vocabulary

router = APIRouter(prefix="/v1/labels", tags=["labels"])


@router.get("")
def list_labels(
    session: SessionDep,
    caller: ReadDep,
    q: Annotated[
        str | None,
        Query(min_length=1, max_length=200, description="find labels: prefix, substring or near spelling"),
    ] = None,
    model_version: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> LabelsOut:
    """Labels in the index and how many videos have each; with `q`, those matching it, best first
    (the exact label, then prefixes, word prefixes, substrings, near spellings)."""
    labels = vocabulary.vocabulary(session, model_version=model_version, tenant_id=caller.sees)
    if q is None:
        return LabelsOut(items=[LabelCount(label=label, videos=count) for label, count in labels[:limit]])
    matches = vocabulary.find_labels(q, labels, limit=limit)
    return LabelsOut(items=[LabelCount(label=m.label, videos=m.videos, match=m.kind.name) for m in matches])
