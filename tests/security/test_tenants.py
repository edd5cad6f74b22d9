"""Finding 1 (no owner checks) and the key lifecycle: two tenants share a deployment and neither sees,
changes or learns about the other's objects; an administrator sees both."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.core.config import Settings
from services.core.db import create_db_engine, session_factory
from services.core.models import Job, VideoLabel
from tests.security.conftest import Caller, Teams
from workers.media.synth import make_video

HOOK_A = "https://hooks.team-a.example/in?token=a-s3cret"


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("v") / f"{uuid.uuid4().hex}.mp4", frames=24, size=(96, 64))


def _upload(api: TestClient, caller: Caller, path: Path, **fields: Any) -> Any:
    with path.open("rb") as f:
        return api.post(
            "/v1/videos", files={"file": (path.name, f, "video/mp4")}, data=fields, headers=caller.headers
        )


def _db(settings: Settings) -> Any:
    return session_factory(create_db_engine(settings.resolved_database_url))


def test_another_tenants_video_and_job_answer_exactly_as_missing_ones(
    api: TestClient, teams: Teams, video: Path
) -> None:
    job = _upload(api, teams.a, video, webhook_url=HOOK_A).json()
    for path in (f"/v1/videos/{job['video_id']}", f"/v1/jobs/{job['id']}"):
        theirs = api.get(path, headers=teams.b.headers)
        missing = api.get(path.rsplit("/", 1)[0] + f"/{uuid.uuid4()}", headers=teams.b.headers)
        assert (
            (theirs.status_code, theirs.json())
            == (missing.status_code, missing.json())
            == (404, missing.json())
        )
        assert api.get(path, headers=teams.a.headers).status_code == 200
        assert api.get(path, headers=teams.admin.headers).status_code == 200  # admin sees every tenant
    assert api.delete(f"/v1/videos/{job['video_id']}", headers=teams.b.headers).status_code == 404
    assert api.get(f"/v1/videos/{job['video_id']}", headers=teams.a.headers).status_code == 200


def test_listings_show_only_the_callers_jobs_and_never_their_webhooks(
    api: TestClient, teams: Teams, video: Path
) -> None:
    job = _upload(api, teams.a, video, webhook_url=HOOK_A).json()
    listing = api.get("/v1/jobs", headers=teams.b.headers)
    assert listing.status_code == 200
    assert job["id"] not in listing.text and "a-s3cret" not in listing.text
    assert job["id"] in api.get("/v1/jobs", headers=teams.a.headers).text


def test_dedupe_is_per_tenant_and_never_hands_over_or_changes_another_tenants_job(
    api: TestClient, teams: Teams, settings: Settings, video: Path
) -> None:
    a = _upload(api, teams.a, video, top_k="3", webhook_url=HOOK_A)
    b = _upload(api, teams.b, video)
    assert (a.status_code, b.status_code) == (202, 202)  # B learns nothing about A's copy
    assert b.json()["id"] != a.json()["id"] and b.json()["duplicate"] is False
    assert b.json()["options"] == {}
    with _db(settings).begin() as session:
        session.get_one(Job, uuid.UUID(a.json()["id"])).status = "failed"
    again = _upload(api, teams.b, video, webhook_url="https://hooks.team-b.example/in")
    assert (again.status_code, again.json()["id"]) == (200, b.json()["id"])
    with _db(settings)() as session:
        theirs = session.get_one(Job, uuid.UUID(a.json()["id"]))
        assert (theirs.status, theirs.options) == ("failed", {"top_k": 3, "webhook_url": HOOK_A})


def test_searches_and_label_counts_see_only_the_callers_videos(
    api: TestClient, teams: Teams, settings: Settings, video: Path
) -> None:
    job = _upload(api, teams.a, video).json()
    label = f"juggling-{uuid.uuid4().hex[:6]}"
    with _db(settings).begin() as session:
        session.add(
            VideoLabel(
                video_id=uuid.UUID(job["video_id"]),
                model_name="tsm",
                model_version=settings.model_version,
                label=label,
                label_index=1,
                score=0.9,
                rank=1,
            )
        )
    found = {
        c.tenant: api.get("/v1/videos", params={"label": label}, headers=c.headers)
        for c in (teams.a, teams.b)
    }
    assert [h["video_id"] for h in found[teams.a.tenant].json()["items"]] == [job["video_id"]]
    assert found[teams.b.tenant].json()["items"] == []
    labels_b = api.get("/v1/labels", headers=teams.b.headers).json()["items"]
    assert label not in [item["label"] for item in labels_b]
    assert label in [item["label"] for item in api.get("/v1/labels", headers=teams.a.headers).json()["items"]]


def test_another_tenants_backfill_answers_as_missing(
    api: TestClient, teams: Teams, settings: Settings
) -> None:
    created = api.post(
        "/v1/backfills", json={"source_uri": f"s3://{settings.s3_bucket}/cams/"}, headers=teams.a.headers
    )
    assert created.status_code == 202, created.text
    backfill_id = created.json()["id"]
    for method, path in (
        ("GET", f"/v1/backfills/{backfill_id}"),
        ("POST", f"/v1/backfills/{backfill_id}/cancel"),
    ):
        assert api.request(method, path, headers=teams.b.headers).status_code == 404
    assert api.get(f"/v1/backfills/{backfill_id}", headers=teams.a.headers).status_code == 200


def test_scopes_limit_what_a_key_may_do(api: TestClient, teams: Teams, video: Path) -> None:
    assert api.get("/v1/jobs", headers=teams.reader.headers).status_code == 200
    refused = _upload(api, teams.reader, video)
    assert (refused.status_code, refused.json()["detail"]) == (403, "this key lacks the 'write' scope")
    assert api.get("/v1/admin/keys", headers=teams.a.headers).status_code == 403


def test_keys_are_listed_revoked_and_rotated_with_a_grace_period(
    api: TestClient, teams: Teams, settings: Settings
) -> None:
    admin = teams.admin.headers
    created = api.post(
        "/v1/admin/keys", json={"name": "ci", "tenant": teams.a.tenant, "scopes": ["read"]}, headers=admin
    )
    assert created.status_code == 201, created.text
    new = created.json()
    assert (new["tenant"], new["scopes"], new["active"]) == (teams.a.tenant, ["read"], True)
    ci = {"Authorization": f"Bearer {new['key']}"}
    assert api.get("/v1/jobs", headers=ci).status_code == 200
    listed = api.get("/v1/admin/keys", headers=admin).json()["items"]
    assert new["id"] in [k["id"] for k in listed] and new["key"] not in str(listed)

    rotated = api.post(f"/v1/admin/keys/{new['id']}/rotate", json={"grace_s": 3600}, headers=admin).json()
    assert api.get("/v1/jobs", headers=ci).status_code == 200  # within the grace period
    assert api.get("/v1/jobs", headers={"Authorization": f"Bearer {rotated['key']}"}).status_code == 200
    assert api.post(f"/v1/admin/keys/{new['id']}/revoke", headers=admin).json()["active"] is False
    assert api.get("/v1/jobs", headers=ci).status_code == 401
    assert api.post(f"/v1/admin/keys/{uuid.uuid4()}/revoke", headers=admin).status_code == 404


def test_an_expired_key_is_refused(api: TestClient, teams: Teams) -> None:
    past = api.post(
        "/v1/admin/keys",
        json={"name": "old", "tenant": teams.a.tenant, "expires_at": "2020-01-01T00:00:00Z"},
        headers=teams.admin.headers,
    ).json()
    assert api.get("/v1/jobs", headers={"Authorization": f"Bearer {past['key']}"}).status_code == 401
