from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, select
from sqlalchemy.exc import IntegrityError

from services.core.db import create_db_engine, session_factory, upgrade_database
from services.core.models import Base, Job, Video, VideoLabel
from services.core.vectors import managed_outside_models

TABLES = {
    "alembic_version",
    "api_keys",
    "backfills",
    "idempotency_keys",
    "jobs",
    "video_labels",
    "videos",
    "window_labels",
}


def _schema_drift(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": managed_outside_models})
        return list(compare_metadata(context, Base.metadata))


@pytest.fixture(params=["sqlite", "postgres"])
def migrated(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    if request.param == "sqlite":
        engine = create_db_engine(f"sqlite:///{tmp_path / 'db' / 'tsmindex.db'}")
    else:
        engine = create_db_engine(request.getfixturevalue("postgres_url"))
    upgrade_database(engine)
    return engine


def test_migrations_create_the_models_schema(migrated: Engine) -> None:
    assert set(inspect(migrated).get_table_names()) >= TABLES
    assert _schema_drift(migrated) == []
    upgrade_database(migrated)  # a second upgrade is a no-op
    assert _schema_drift(migrated) == []


def test_one_job_per_video_and_model_version(migrated: Engine) -> None:
    factory = session_factory(migrated)
    sha = uuid.uuid4().hex * 2
    with factory.begin() as session:
        video = Video(sha256=sha, size_bytes=1)
        session.add(video)
        session.flush()
        session.add(Job(video_id=video.id, model_name="tsm", model_version="1"))
        session.add(Job(video_id=video.id, model_name="tsm", model_version="2"))
    with pytest.raises(IntegrityError), factory.begin() as session:
        session.add(Job(video_id=video.id, model_name="tsm", model_version="1"))
    with factory.begin() as session:
        session.add(
            VideoLabel(
                video_id=video.id,
                model_name="tsm",
                model_version="1",
                label="a",
                label_index=0,
                score=0.5,
                rank=1,
            )
        )
    with factory.begin() as session:
        session.delete(session.get(Video, video.id))
    with factory() as session:
        # Deleting a video removes its jobs and labels (ON DELETE CASCADE).
        assert session.scalars(select(Job).where(Job.video_id == video.id)).all() == []
        assert session.scalars(select(VideoLabel).where(VideoLabel.video_id == video.id)).all() == []
