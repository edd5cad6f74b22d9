"""Search keyed by model name and version: several models served at once never mix their hits."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from services.core.config import Settings
from services.core.db import create_db_engine, session_factory
from services.core.models import LabelSegment, Video, VideoLabel

pytestmark = pytest.mark.integration


@pytest.fixture()
def settings(platform_settings: Settings) -> Settings:
    return platform_settings


def test_search_and_moments_filter_by_model_name_and_version(client: TestClient, settings: Settings) -> None:
    label, version, other = f"wave-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex[:6], uuid.uuid4().hex[:6]
    indexed = [("tsm", version), ("motion", version), ("tsm", other)]
    videos = [Video(sha256=uuid.uuid4().hex, filename=f"{n}-{v}.mp4") for n, v in indexed]
    engine = create_db_engine(settings.resolved_database_url)
    with session_factory(engine).begin() as session:
        session.add_all(videos)
        session.flush()
        for video, (name, ver) in zip(videos, indexed, strict=True):
            key = {"video_id": video.id, "model_name": name, "model_version": ver, "label": label}
            session.add(VideoLabel(**key, label_index=0, score=0.9, rank=0))
            session.add(
                LabelSegment(
                    **key, label_index=0, score=0.9, start_ms=0, end_ms=1000, windows=1, mean_score=0.9
                )
            )
    engine.dispose()

    def hits(path: str, **params: str) -> set[str]:
        items = client.get(path, params={"label": label, **params}).json()["items"]
        return {item["filename"] for item in items}

    names = [v.filename for v in videos]
    assert hits("/v1/videos") == set(names)
    assert hits("/v1/videos", model="tsm") == {names[0], names[2]}
    assert hits("/v1/videos", model=f"tsm:{version}") == {names[0]}
    assert hits("/v1/videos", model="motion") == {names[1]}
    assert hits("/v1/videos", model_version=version) == {names[0], names[1]}
    assert hits("/v1/moments", model=f"motion:{version}") == {names[1]}
    assert hits("/v1/moments", model="tsm", model_version=other) == {names[2]}
    disagree = client.get(
        "/v1/videos", params={"label": label, "model": f"tsm:{version}", "model_version": other}
    )
    assert disagree.status_code == 422
