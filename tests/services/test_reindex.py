"""services.core.reindex: the videos a reindex takes along, selected by --where and paged by id."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from services.core.db import create_db_engine, session_factory, upgrade_database
from services.core.models import Job, JobStatus, Video, VideoLabel
from services.core.reindex import ReindexFilterError, ReindexFilters, matching_videos
from services.core.versions import ModelVersion


@pytest.fixture()
def session(tmp_path: Path) -> Iterator[Session]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'index.db'}")
    upgrade_database(engine)
    with session_factory(engine)() as s:
        yield s
    engine.dispose()


def _video(
    session: Session, name: str, day: str, labels: dict[str, float], version: str = "1", **kw: str
) -> uuid.UUID:
    video = Video(
        sha256=uuid.uuid4().hex,
        filename=name,
        created_at=datetime.fromisoformat(day).replace(tzinfo=UTC),
        **kw,
    )
    session.add(video)
    session.flush()
    status = JobStatus.succeeded if labels else JobStatus.failed
    session.add(Job(video_id=video.id, model_name="tsm", model_version=version, status=status))
    for rank, (label, score) in enumerate(labels.items()):
        session.add(
            VideoLabel(
                video_id=video.id,
                model_name="tsm",
                model_version=version,
                label=label,
                label_index=rank,
                score=score,
                rank=rank,
            )
        )
    session.flush()
    return video.id


def _all(session: Session, *where: str) -> set[uuid.UUID]:
    return set(matching_videos(session, ReindexFilters.parse(where), after=None, limit=100))


def test_where_clauses_select_exactly_the_matching_videos(session: Session) -> None:
    a = _video(session, "a.mp4", "2024-01-02", {"run": 0.9}, source_uri="s3://media/cam7/a.mp4")
    b = _video(session, "cam7-b.mp4", "2024-02-01", {"run": 0.3, "jump": 0.2})
    c = _video(session, "c.mp4", "2024-03-01", {"jump": 0.8}, version="2", source_uri="s3://media/cam8/c.mp4")
    d = _video(session, "d%.mp4", "2024-03-05", {})  # its only job failed
    assert _all(session) == {a, b, c, d}
    assert _all(session, "label=run") == {a, b}
    assert _all(session, "label=run", "min_score=0.5") == {a}
    assert _all(session, "label=jump", "from=tsm:2") == {c}
    assert _all(session, "from=tsm:1") == {a, b}  # succeeded under tsm:1
    assert _all(session, "since=2024-02-01") == {b, c, d}
    assert _all(session, "since=2024-02-01", "until=2024-03-01") == {b}
    assert _all(session, "prefix=s3://media/cam7/") == {a}
    assert _all(session, "prefix=cam7") == {b}
    assert _all(session, "prefix=d%") == {d}  # a literal %, not a wildcard
    assert _all(session, "prefix=%") == set()


def test_pages_follow_the_video_ids_and_resume_after_a_cursor(session: Session) -> None:
    ids = sorted(_video(session, f"{i}.mp4", "2024-01-01", {"run": 0.5}) for i in range(5))
    seen: list[uuid.UUID] = []
    after = None
    while page := matching_videos(session, ReindexFilters(), after=after, limit=2):
        seen += page
        after = page[-1]
    assert seen == ids


@pytest.mark.parametrize(
    ("clause", "message"),
    [
        ("label", "expected KEY=VALUE"),
        ("colour=red", "expected KEY=VALUE"),
        ("label=", "expected KEY=VALUE"),
        ("min_score=2", "min_score is between 0 and 1"),
        ("since=yesterday", "Invalid isoformat string"),
        ("from=tsm", "expected NAME:VERSION"),
    ],
)
def test_a_bad_where_clause_is_a_clear_error(clause: str, message: str) -> None:
    with pytest.raises(ReindexFilterError) as caught:
        ReindexFilters.parse([clause])
    assert str(caught.value).startswith(f"{clause!r}: ") and message in str(caught.value)


def test_filters_survive_their_json_form() -> None:
    filters = ReindexFilters.parse(
        ["label=run", "min_score=0.4", "since=2024-01-01", "from=tsm:1", "prefix=s3://m/"]
    )
    assert ReindexFilters.from_dict(filters.to_dict()) == filters
    assert filters.source == ModelVersion("tsm", "1")
