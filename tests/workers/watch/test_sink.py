"""Stream moments in the index: a pseudo-video per stream id, found by the same moment search as the
archive's, on SQLite (embedded) and PostgreSQL (platform)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from services.core import search
from services.core.db import create_db_engine, session_factory, upgrade_database
from services.core.models import LabelSegment
from tests import platform_servers
from workers.watch.sink import open_stream, write_moment

pg_database = platform_servers.pg_database
postgres_url = platform_servers.postgres_url
migrated_postgres_url = platform_servers.migrated_postgres_url


@pytest.fixture(params=["sqlite", "postgres"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    if request.param == "sqlite":
        engine = create_db_engine(f"sqlite:///{tmp_path / 'tsmindex.db'}")
        upgrade_database(engine)
    else:
        engine = create_db_engine(request.getfixturevalue("migrated_postgres_url"))
    yield session_factory(engine)
    engine.dispose()


def _run(
    sessions: sessionmaker[Session], stream_id: str, label: str, spans: list[tuple[float, float]]
) -> int:
    """One watch run: the stream opened once, then a moment per span; returns the run's offset."""
    with sessions.begin() as session:
        stream = open_stream(session, stream_id=stream_id)
    for start_s, end_s in spans:
        with sessions.begin() as session:
            write_moment(
                session,
                stream,
                model_name="tsm-motion-online",
                model_version="t1",
                label=label,
                label_index=1,
                start_s=start_s,
                end_s=end_s,
                frames=9,
                best_score=0.95,
                mean_score=0.9,
            )
    return stream.offset_ms


def test_a_stream_is_one_video_whose_moments_go_on_across_runs(sessions: sessionmaker[Session]) -> None:
    stream_id = f"cam7-{uuid.uuid4().hex[:8]}"
    label = f"label-{uuid.uuid4().hex[:8]}"  # this test's own rows in a shared database
    assert _run(sessions, stream_id, label, [(0.0, 1.5), (2.0, 3.25)]) == 0
    # A second run of the same stream: its time 0 falls after what the stream holds.
    assert _run(sessions, stream_id, label, [(0.0, 1.0)]) == 3250

    page = search.PageRequest(label)
    with sessions() as session:
        hits, _ = search.split_page(session.execute(search.moment_hits(page)).all(), page)
        spans = sorted((hit.start_ms, hit.end_ms, hit.windows) for hit, _ in hits)
        (video,) = {video for _, video in hits}
        assert video.source_uri == f"stream://{stream_id}" and video.filename == stream_id
        assert video.duration_s == pytest.approx(4.25)
        assert session.query(LabelSegment).filter(LabelSegment.video_id == video.id).count() == 3
    assert spans == [(0, 1500, 9), (2000, 3250, 9), (3250, 4250, 9)]
