"""Model versions in the index: naming one (``NAME:VERSION``) and retiring one.

Labels, windows and moments are keyed by model name and version, so an index can hold several
versions side by side (the old one stays searchable while a reindex runs). Retiring a version
deletes its rows in batches, so a large index is never locked in one long transaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from services.core.models import IndexedWindow, Job, LabelSegment, VideoLabel, WindowLabel
from services.core.storage import ObjectStorage


class ModelVersionError(ValueError):
    """A model version that is not written ``NAME:VERSION``."""


@dataclass(frozen=True, order=True)
class ModelVersion:
    """One model version, as labels and jobs are keyed."""

    name: str
    version: str

    @classmethod
    def parse(cls, text: str) -> ModelVersion:
        name, sep, version = text.strip().rpartition(":")
        if not sep or not name or not version:
            raise ModelVersionError(f"{text!r}: expected NAME:VERSION, e.g. tsm:2")
        return cls(name, version)

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"

    def astuple(self) -> tuple[str, str]:
        return self.name, self.version


# Deleted in this order: the per-window rows are the bulk, the jobs go last so an interrupted retire
# leaves the version listed (and retire can be run again).
RetiredTable = type[IndexedWindow] | type[WindowLabel] | type[LabelSegment] | type[VideoLabel] | type[Job]
RETIRED_TABLES: tuple[RetiredTable, ...] = (
    IndexedWindow,
    WindowLabel,
    LabelSegment,
    VideoLabel,
    Job,
)


def version_rows(session: Session, model: ModelVersion) -> dict[str, int]:
    """How many rows of each table ``model`` has (what a retire would delete)."""
    return {
        table.__tablename__: session.scalar(
            select(func.count())
            .select_from(table)
            .where(table.model_name == model.name, table.model_version == model.version)
        )
        or 0
        for table in RETIRED_TABLES
    }


def retire_version(
    sessions: sessionmaker[Session],
    model: ModelVersion,
    *,
    batch_size: int = 5000,
    on_batch: Callable[[str, int], None] | None = None,
    storage: ObjectStorage | None = None,
) -> dict[str, int]:
    """Delete every row ``model`` wrote, ``batch_size`` rows per transaction; returns the counts
    deleted per table. ``on_batch(table, rows)`` reports each committed batch. With ``storage``,
    the thumbnails of the deleted windows go too (after their rows' commit)."""
    deleted: dict[str, int] = {}
    for table in RETIRED_TABLES:
        deleted[table.__tablename__] = 0
        while True:
            with sessions.begin() as session:
                ids = (
                    select(table.id)
                    .where(table.model_name == model.name, table.model_version == model.version)
                    .limit(batch_size)
                    .scalar_subquery()
                )
                keys: list[str] = []
                if table is IndexedWindow and storage is not None:
                    thumbnails = select(IndexedWindow.thumbnail_key).where(IndexedWindow.id.in_(ids))
                    keys = [key for key in session.scalars(thumbnails) if key]
                result = session.execute(
                    delete(table).where(table.id.in_(ids)).execution_options(synchronize_session=False)
                )
                rows = int(getattr(result, "rowcount", 0) or 0)
            if storage is not None:
                for key in keys:
                    storage.delete(key)
            if rows == 0:
                break
            deleted[table.__tablename__] += rows
            if on_batch is not None:
                on_batch(table.__tablename__, rows)
    return deleted
