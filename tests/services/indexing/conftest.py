"""A database per test (SQLite) or this run's PostgreSQL database, and a job factory: every test
owns its rows, and a reaper in a test acts only on its own jobs (``Scope``)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from services.core.config import Settings
from services.core.db import create_db_engine, session_factory, upgrade_database
from services.core.models import Job, Video


@pytest.fixture(params=["sqlite", "postgres"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    if request.param == "sqlite":
        engine = create_db_engine(f"sqlite:///{tmp_path / 'tsmindex.db'}")
        upgrade_database(engine)
    else:
        engine = create_db_engine(request.getfixturevalue("migrated_postgres_url"))
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path,
        model_version=f"v-{uuid.uuid4().hex[:8]}",
        job_max_attempts=3,
        job_lease_s=60.0,
        job_retry_base_s=5.0,
        job_retry_cap_s=40.0,
        job_deadline_s=3600.0,
    )


MakeJob = Callable[..., uuid.UUID]


@pytest.fixture()
def make_job(sessions: sessionmaker[Session], settings: Settings) -> MakeJob:
    """A video of its own and its job for ``settings``' model, with ``fields`` set on the job."""

    def make(**fields: Any) -> uuid.UUID:
        with sessions.begin() as session:
            sha = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
            video = Video(sha256=sha, filename=f"{sha[:8]}.mp4")
            session.add(video)
            session.flush()
            job = Job(
                video_id=video.id,
                model_name=settings.model_name,
                model_version=settings.model_version,
                options=fields.pop("options", {}),
                **fields,
            )
            session.add(job)
            session.flush()
            return job.id

    return make
