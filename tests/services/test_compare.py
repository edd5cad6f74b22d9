"""``GET /v1/compare`` and services.core.compare on an index built so that every difference is known."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from services.core.compare import Moment, MovedMoment, diff_moments
from services.core.config import Settings
from services.core.db import create_db_engine, session_factory
from services.core.models import LabelSegment, Video, VideoLabel

pytestmark = pytest.mark.integration


@pytest.fixture()
def settings(platform_settings: Settings) -> Settings:
    return platform_settings


def _index(session: Session, video: Video, version: str, labels: list[str], moments: list[Moment]) -> None:
    for rank, label in enumerate(labels):
        session.add(
            VideoLabel(
                video_id=video.id,
                model_name="tsm",
                model_version=version,
                label=label,
                label_index=rank,
                score=0.9 - rank / 10,
                rank=rank,
            )
        )
    for m in moments:
        session.add(
            LabelSegment(
                video_id=video.id,
                model_name="tsm",
                model_version=version,
                label=m.label,
                label_index=0,
                score=0.8,
                start_ms=m.start_ms,
                end_ms=m.end_ms,
                windows=(m.end_ms - m.start_ms) // 2000,
                mean_score=0.7,
            )
        )


def test_compare_reports_gained_lost_moved_and_agreement(client: TestClient, settings: Settings) -> None:
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    engine = create_db_engine(settings.resolved_database_url)
    videos = [Video(filename=f"{i}.mp4", sha256=uuid.uuid4().hex) for i in range(4)]
    with session_factory(engine).begin() as session:
        session.add_all(videos)
        session.flush()
        # 0: same top label; swim lost, walk gained (Jaccard 2/4); its "run" moment moved by +2 s.
        _index(session, videos[0], a, ["run", "jump", "swim"], [Moment("run", 0, 4000)])
        _index(session, videos[0], b, ["run", "jump", "walk"], [Moment("run", 2000, 6000)])
        # 1: the same labels in another order (Jaccard 1, top label differs); jump's moment vanished,
        # a run moment appeared.
        _index(session, videos[1], a, ["jump", "run"], [Moment("jump", 0, 4000)])
        _index(session, videos[1], b, ["run", "jump"], [Moment("run", 8000, 12000)])
        # 2: only a indexed it.
        _index(session, videos[2], a, ["swim"], [])
        # 3: identical under both.
        _index(session, videos[3], a, ["walk"], [Moment("walk", 0, 2000)])
        _index(session, videos[3], b, ["walk"], [Moment("walk", 0, 2000)])
    engine.dispose()

    body = client.get("/v1/compare", params={"a": f"tsm:{a}", "b": f"tsm:{b}"}).json()
    assert {k: body[k] for k in ("compared", "only_a", "only_b", "moments_moved", "changed")} == {
        "compared": 3,
        "only_a": 1,
        "only_b": 0,
        "moments_moved": 1,
        "changed": 2,
    }
    assert body["top1_agreement"] == pytest.approx(2 / 3)
    assert body["mean_jaccard"] == pytest.approx((0.5 + 1 + 1) / 3)
    by_video = {v["video_id"]: v for v in body["videos"]}
    assert set(by_video) == {str(videos[0].id), str(videos[1].id)}
    first, second = by_video[str(videos[0].id)], by_video[str(videos[1].id)]
    assert (first["top_a"], first["top_b"], first["gained"], first["lost"]) == (
        "run",
        "run",
        ["walk"],
        ["swim"],
    )
    assert first["jaccard"] == 0.5
    assert first["moved"] == [
        {
            "label": "run",
            "a": {"start_ms": 0, "end_ms": 4000},
            "b": {"start_ms": 2000, "end_ms": 6000},
            "start_shift_ms": 2000,
            "end_shift_ms": 2000,
        }
    ]
    assert (second["top_a"], second["top_b"], second["gained"], second["lost"]) == ("jump", "run", [], [])
    assert second["appeared"] == [{"label": "run", "start_ms": 8000, "end_ms": 12000}]
    assert second["vanished"] == [{"label": "jump", "start_ms": 0, "end_ms": 4000}]

    # Restricted to the unchanged video: full agreement, nothing listed.
    only = client.get(
        "/v1/compare", params={"a": f"tsm:{a}", "b": f"tsm:{b}", "video_id": [str(videos[3].id)]}
    ).json()
    assert (only["compared"], only["top1_agreement"], only["mean_jaccard"], only["videos"]) == (
        1,
        1.0,
        1.0,
        [],
    )


def test_compare_rejects_a_version_without_a_name(client: TestClient) -> None:
    response = client.get("/v1/compare", params={"a": "1", "b": "tsm:2"})
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["query", "a"] and "NAME:VERSION" in error["msg"]


def test_moments_pair_by_overlap_within_one_label() -> None:
    moved, appeared, vanished = diff_moments(
        [Moment("run", 0, 4000), Moment("run", 10000, 12000), Moment("jump", 0, 2000)],
        [Moment("run", 0, 4000), Moment("run", 11000, 14000), Moment("jump", 2000, 4000)],
    )
    assert moved == (MovedMoment("run", Moment("run", 10000, 12000), Moment("run", 11000, 14000)),)
    assert appeared == (Moment("jump", 2000, 4000),)  # touching end to start is no overlap
    assert vanished == (Moment("jump", 0, 2000),)
