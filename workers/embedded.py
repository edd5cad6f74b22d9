"""Embedded mode: index local files in this process with the same pipeline the workers run.

Each file becomes a video row (keyed by its SHA-256, read where it lies through a ``file://`` URI) and
a job for the model in use; jobs already done for the same bytes and model version are not redone.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from services.core import served
from services.core.config import Settings
from services.core.db import db_engine, session_factory, upgrade_database
from services.core.indexing import jobs
from services.core.indexing.jobs import VideoSpec
from services.core.indexing.options import IndexOptions
from services.core.models import Job, Video, VideoLabel, WindowLabel
from services.core.storage import make_storage, sha256_file
from workers.indexing.context import PipelineContext
from workers.indexing.run import run_job

if TYPE_CHECKING:
    from model_store.inference import Precision


@dataclass(frozen=True)
class IndexedVideo:
    path: Path
    video_id: uuid.UUID
    job_id: uuid.UUID
    status: str
    reason: str | None
    skipped: bool  # already indexed by this model version
    duration_s: float | None
    windows: int
    labels: list[tuple[str, float]]
    shortfall_frames: int | None = None  # chosen frames that did not decode (a damaged file)
    covered_s: float | None = None  # seconds inside a window
    truncated: bool = False  # a window cap stopped indexing early


def submit_file(
    ctx: PipelineContext, path: Path, *, options: Mapping[str, object] | None = None
) -> tuple[uuid.UUID, bool]:
    """The job for ``path`` under the context's model version; True when there is work to do."""
    spec = VideoSpec(
        sha256=sha256_file(path),
        source_uri=path.resolve().as_uri(),
        filename=path.name,
        size_bytes=path.stat().st_size,
    )
    parsed = IndexOptions.model_validate(dict(options or {})).to_job_options()
    with ctx.sessions.begin() as session:
        model = served.resolve(session, ctx.settings)
        submission = jobs.submit(session=session, video=spec, model=model, options=parsed)
        return submission.job.id, submission.send


def index_files(
    ctx: PipelineContext,
    paths: Sequence[Path],
    *,
    options: Mapping[str, object] | None = None,
    on_file_done: Callable[[IndexedVideo], None] | None = None,
    on_file_start: Callable[[Path], None] | None = None,
) -> list[IndexedVideo]:
    results = []
    for path in paths:
        if on_file_start is not None:
            on_file_start(path)
        job_id, todo = submit_file(ctx, path, options=options)
        if todo:
            run_job(job_id, ctx)
        result = describe(ctx, path, job_id, skipped=not todo)
        results.append(result)
        if on_file_done is not None:
            on_file_done(result)
    return results


def describe(ctx: PipelineContext, path: Path, job_id: uuid.UUID, *, skipped: bool = False) -> IndexedVideo:
    with ctx.sessions() as session:
        job = session.get_one(Job, job_id)
        video = session.get_one(Video, job.video_id)
        key = (
            VideoLabel.video_id == video.id,
            VideoLabel.model_name == job.model_name,
            VideoLabel.model_version == job.model_version,
        )
        labels = session.execute(
            select(VideoLabel.label, VideoLabel.score).where(*key).order_by(VideoLabel.rank)
        ).all()
        windows = session.scalars(
            select(WindowLabel.window_index)
            .where(
                WindowLabel.video_id == video.id,
                WindowLabel.model_name == job.model_name,
                WindowLabel.model_version == job.model_version,
            )
            .distinct()
        ).all()
        return IndexedVideo(
            path=path,
            video_id=video.id,
            job_id=job.id,
            status=job.status,
            reason=job.reason,
            skipped=skipped,
            duration_s=video.duration_s,
            windows=len(windows),
            labels=[(label, score) for label, score in labels],
            shortfall_frames=job.shortfall_frames,
            covered_s=job.covered_s,
            truncated=job.truncated,
        )


def embedded_context(
    settings: Settings,
    checkpoint: Path,
    *,
    on_progress: Callable[[uuid.UUID, float], None] | None = None,
    precision: Precision = "auto",
) -> PipelineContext:
    """SQLite (migrated here) or the configured database, local storage, in-process inference.

    The model's card fixes the model name/version the labels are stored under and the clip size.
    """
    from workers.inference import InProcessEngine

    engine = InProcessEngine.from_checkpoint(checkpoint, precision=precision)
    card = engine.model.card
    settings = settings.model_copy(
        update={
            "checkpoint_path": checkpoint,
            "model_name": card.name,
            "model_version": card.version,
            "num_segments": card.config.num_segments,
            "clip_resize": card.preprocess.resize,
            "clip_crop": card.preprocess.crop,
        }
    )
    db = db_engine(settings)
    if db.dialect.name == "sqlite":
        upgrade_database(db)
    return PipelineContext(
        settings=settings,
        sessions=session_factory(db),
        storage=make_storage(settings),
        classifier=engine,
        on_progress=on_progress,
    )
