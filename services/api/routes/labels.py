"""The label vocabulary of the index."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import func, select

from services.api.deps import SessionDep
from services.api.guard import ReadDep
from services.api.schemas import LabelCount, LabelsOut
from services.core.models import Video, VideoLabel
from services.core.tenancy import scoped

router = APIRouter(prefix="/v1/labels", tags=["labels"])


@router.get("")
def list_labels(session: SessionDep, caller: ReadDep) -> LabelsOut:
    videos = func.count(func.distinct(VideoLabel.video_id))
    query = select(VideoLabel.label, videos).join(Video, Video.id == VideoLabel.video_id)
    query = scoped(query, Video.tenant_id, caller.sees)
    rows = session.execute(query.group_by(VideoLabel.label).order_by(videos.desc(), VideoLabel.label)).all()
    return LabelsOut(items=[LabelCount(label=label, videos=count) for label, count in rows])
