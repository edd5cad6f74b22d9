"""Video search by peak or mean, several labels, moments in a time range, label lookup (API)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.core.config import Settings
from services.core.db import create_db_engine, session_factory
from services.core.models import Job, LabelSegment, Video, VideoLabel, WindowLabel
from services.core.windows import (
    ScoredWindow,
    label_segments,
    label_stats,
    video_label_rows,
    window_label_rows,
)

WINDOW_MS = 10_000


class _Options:
    """The job options the pipeline applies (top 3 per window, nothing filtered)."""

    top_k = 3
    min_score = 0.0

    def keeps(self, label: str) -> bool:
        return True


@pytest.fixture()
def settings(platform_settings: Settings) -> Settings:
    return platform_settings


_INDICES: dict[str, int] = {}


def _label_index(label: str) -> int:
    """A label's class number, the same in every window (as the model's is)."""
    return _INDICES.setdefault(label, len(_INDICES))


def _index(settings: Settings, windows: list[dict[str, float]], *, filename: str = "x.mp4") -> uuid.UUID:
    """A video whose windows scored these labels, stored as the pipeline stores it."""
    scored = [
        ScoredWindow(
            n,
            n * WINDOW_MS,
            (n + 1) * WINDOW_MS,
            [
                (label, _label_index(label), score)
                for label, score in sorted(w.items(), key=lambda kv: -kv[1])
            ],
        )
        for n, w in enumerate(windows)
    ]
    engine = create_db_engine(settings.resolved_database_url)
    with session_factory(engine).begin() as session:
        video = Video(sha256=uuid.uuid4().hex * 2, filename=filename, duration_s=len(windows) * 10.0)
        session.add(video)
        session.flush()
        key = {"video_id": video.id, "model_name": "tsm", "model_version": settings.model_version}
        session.add(Job(**key, status="succeeded"))
        session.add_all(VideoLabel(**row) for row in video_label_rows(label_stats(scored, _Options()), key))
        rows = window_label_rows(scored, _Options(), key)
        session.add_all(WindowLabel(**row) for row in rows)
        session.add_all(LabelSegment(**key, **segment) for segment in label_segments(rows))
        video_id = video.id
    engine.dispose()
    return video_id


def _search(client: TestClient, path: str, **params: Any) -> list[dict[str, Any]]:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_a_label_in_one_window_of_a_long_video_ranks_it_first_by_peak(
    client: TestClient, settings: Settings
) -> None:
    label = f"juggling fire {uuid.uuid4().hex[:6]}"
    # One hour at 10 s: the action fills one window; elsewhere the label is absent.
    hour = [{"walking": 0.8}] * 360
    hour[200] = {label: 0.92, "walking": 0.05}
    long_video = _index(settings, hour, filename="hour.mp4")
    # A short video where the label is everywhere, but weakly.
    short_video = _index(settings, [{label: 0.4, "walking": 0.3}] * 3, filename="short.mp4")
    version = settings.model_version

    by_peak = _search(client, "/v1/videos", label=label, model_version=version)
    assert [hit["video_id"] for hit in by_peak] == [str(long_video), str(short_video)]
    assert by_peak[0]["peak_score"] == pytest.approx(0.92) and by_peak[0]["peak_window"] == 200
    assert by_peak[0]["score"] == pytest.approx(0.92 / 360)
    assert by_peak[0]["thumbnail_url"].startswith(f"/v1/videos/{long_video}/windows/200/thumbnail")
    by_mean = _search(client, "/v1/videos", label=label, model_version=version, sort="mean")
    assert [hit["video_id"] for hit in by_mean] == [str(short_video), str(long_video)]
    # The minimum score applies to the sorted score: by mean the hour-long video drops out.
    kept = _search(client, "/v1/videos", label=label, model_version=version, sort="mean", min_score=0.1)
    assert [hit["video_id"] for hit in kept] == [str(short_video)]
    assert client.get("/v1/videos", params={"label": label, "sort": "loudest"}).status_code == 422


def test_several_labels_match_any_or_all(client: TestClient, settings: Settings) -> None:
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    both = _index(settings, [{a: 0.5}, {b: 0.9}])
    only_a = _index(settings, [{a: 0.7}])
    only_b = _index(settings, [{b: 0.6}])
    version = settings.model_version

    anyof = _search(client, "/v1/videos", label=[a, b], model_version=version)
    # One row per video, for its best matching label.
    assert [(hit["video_id"], hit["label"]) for hit in anyof] == [
        (str(both), b),
        (str(only_a), a),
        (str(only_b), b),
    ]
    allof = _search(client, "/v1/videos", label=[a, b], match="all", model_version=version)
    assert [hit["video_id"] for hit in allof] == [str(both)]
    # Pages of a several-label search follow each other without loss or repetition.
    first = client.get("/v1/videos", params={"label": [a, b], "model_version": version, "limit": 2}).json()
    rest = client.get(
        "/v1/videos",
        params={"label": [a, b], "model_version": version, "limit": 2, "cursor": first["next_cursor"]},
    ).json()
    assert [hit["video_id"] for hit in first["items"] + rest["items"]] == [h["video_id"] for h in anyof]

    moments = _search(client, "/v1/moments", label=[a, b], match="all", model_version=version)
    assert {(m["video_id"], m["label"]) for m in moments} == {(str(both), a), (str(both), b)}


def test_moments_within_a_time_range(client: TestClient, settings: Settings) -> None:
    label = f"surfing water {uuid.uuid4().hex[:6]}"
    video = _index(settings, [{label: 0.9}, {"x": 0.5}, {label: 0.6}, {label: 0.7}, {"x": 0.2}, {label: 0.3}])
    version = settings.model_version

    everywhere = _search(client, "/v1/moments", label=label, model_version=version)
    assert [(m["start_ms"], m["end_ms"]) for m in everywhere] == [
        (0, 10_000),
        (20_000, 40_000),
        (50_000, 60_000),
    ]
    assert all(m["video_id"] == str(video) for m in everywhere)
    # Moments overlapping [15 s, 55 s).
    inside = _search(client, "/v1/moments", label=label, model_version=version, start_s=15, end_s=55)
    assert [(m["start_ms"], m["end_ms"], m["peak_window"]) for m in inside] == [
        (20_000, 40_000, 3),
        (50_000, 60_000, 5),
    ]
    assert client.get("/v1/moments", params={"label": label, "start_s": 5, "end_s": 5}).status_code == 422


def test_label_lookup_forgives_case_prefixes_and_typos(client: TestClient, settings: Settings) -> None:
    tag = uuid.uuid4().hex[:6]
    balls, fire = f"juggling balls {tag}", f"juggling fire {tag}"
    _index(settings, [{balls: 0.9, fire: 0.4}])
    _index(settings, [{balls: 0.8}])
    version = settings.model_version

    found = _search(client, "/v1/labels", q="JUGG", model_version=version)
    assert [(x["label"], x["videos"], x["match"]) for x in found] == [
        (balls, 2, "prefix"),
        (fire, 1, "prefix"),
    ]
    assert [x["label"] for x in _search(client, "/v1/labels", q=f"fire {tag}", model_version=version)] == [
        fire
    ]
    assert [x["label"] for x in _search(client, "/v1/labels", q="jugling", model_version=version)] == [
        balls,
        fire,
    ]
    assert _search(client, "/v1/labels", q="zzzzzz", model_version=version) == []
