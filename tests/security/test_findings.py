"""Findings 2 to 6 of the security review, each as it was reproduced: S3 credentials pointed anywhere,
unbounded bodies, webhook request forgery and slow-loris, replayable signatures, and the smaller ones."""

from __future__ import annotations

import asyncio
import base64
import secrets
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.core import signing
from services.core.config import Settings
from services.core.db import create_db_engine, session_factory
from services.core.outbound import DeadlineExceededError, OutboundPolicy, post
from services.core.webhooks import Outcome, secret_for, send_webhook
from tests.platform_servers import moto_client
from tests.security.conftest import Teams
from workers.media.synth import make_video


def _bucket(settings: Settings, prefix: str, objects: dict[str, bytes]) -> str:
    name = f"{prefix}-{secrets.token_hex(4)}"
    s3 = moto_client(settings.s3_endpoint_url or "")
    s3.create_bucket(Bucket=name)
    for key, body in objects.items():
        s3.put_object(Bucket=name, Key=key, Body=body)
    return name


def test_s3_outside_the_allow_list_is_403_with_one_message_whether_or_not_it_exists(
    api: TestClient, teams: Teams, settings: Settings
) -> None:
    private = _bucket(settings, "hr-private", {"salaries.mp4": b"\0" * 64, "people/1.mp4": b"\0" * 64})
    media = _bucket(settings, "media-a", {})
    allow = api.put(
        f"/v1/admin/tenants/{teams.a.tenant}/s3-allow",
        json={"s3_allow": [f"{media}/*"]},
        headers=teams.admin.headers,
    )
    assert allow.status_code == 200, allow.text
    answers = []
    for key in ("salaries.mp4", "nothing-here.mp4"):
        uri = f"s3://{private}/{key}"
        response = api.post("/v1/videos", json={"source_uri": uri}, headers=teams.a.headers)
        answers.append((response.status_code, response.json()["detail"].replace(uri, "URI")))
    assert answers[0] == answers[1] == (403, "URI is outside the S3 locations this tenant may use")
    # A backfill of the bucket (which listed its keys) and an export into it are refused alike.
    for body in (
        {"source_uri": f"s3://{private}/people/"},
        {"source_uri": f"s3://{media}/cams/", "output_uri": f"s3://{private}/exports/"},
    ):
        assert api.post("/v1/backfills", json=body, headers=teams.a.headers).status_code == 403
    assert (
        api.post(
            "/v1/backfills", json={"source_uri": f"s3://{media}/cams/"}, headers=teams.a.headers
        ).status_code
        == 202
    )


def test_the_platforms_stored_uploads_are_never_a_source_or_an_output(
    api: TestClient, teams: Teams, settings: Settings
) -> None:
    """B has no allow-list (every bucket), yet cannot read A's uploads or write over them."""
    uploads = f"s3://{settings.s3_bucket}/uploads/"
    assert (
        api.post("/v1/videos", json={"source_uri": uploads + "x"}, headers=teams.b.headers).status_code == 403
    )
    for body in ({"source_uri": uploads}, {"source_uri": "s3://elsewhere/x/", "output_uri": uploads}):
        assert api.post("/v1/backfills", json=body, headers=teams.b.headers).status_code == 403


def test_no_key_no_body_read_even_for_200_mib(api: TestClient) -> None:
    """Finding 3: POST /v1/backfills parsed 200 MiB of JSON before its 401 (memory: test_guard.py)."""
    pulled = 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b" " * 65536, "more_body": pulled < 3200}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/backfills",
        "raw_path": b"/v1/backfills",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
        "state": {},
    }
    asyncio.run(api.app(scope, receive, send))  # type: ignore[arg-type]
    assert (sent[0]["status"], pulled) == (401, 0)


@pytest.mark.parametrize(
    "hook",
    ["http://169.254.169.254/latest/meta-data/iam/", "https://127.0.0.1:8000/v1/jobs", "https://[::1]/"],
)
def test_a_webhook_to_metadata_or_loopback_is_refused_at_submission(
    api: TestClient, teams: Teams, hook: str
) -> None:
    """Finding 4: the worker used to POST to whatever webhook_url said."""
    response = api.post(
        "/v1/videos", json={"source_uri": "s3://media/x.mp4", "webhook_url": hook}, headers=teams.a.headers
    )
    assert (response.status_code, response.json()["detail"][0]["loc"]) == (422, ["body", "webhook_url"])


def test_delivery_refuses_loopback_and_cuts_a_slow_loris_at_one_deadline() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            while not stop.wait(0.2):
                conn.sendall(b".")

    threading.Thread(target=trickle, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    strict = OutboundPolicy.of(deadline_s=1.0, allow_http=True, allow_networks=[])
    assert send_webhook(url, {}, secret="s", delivery_id="msg_x", policy=strict) is Outcome.give_up
    allowed = OutboundPolicy.of(deadline_s=1.0, allow_http=True, allow_networks=["127.0.0.1/32"])
    started = time.monotonic()
    try:
        with pytest.raises(DeadlineExceededError):
            post(url, b"{}", {}, allowed)
    finally:
        stop.set()
        listener.close()
    assert time.monotonic() - started < 2.0


def test_each_tenant_signs_with_its_own_secret_and_old_deliveries_do_not_verify(
    api: TestClient, teams: Teams, settings: Settings, tmp_path: Path
) -> None:
    """Finding 5: one global secret over the body alone let any receiver forge and replay."""
    secrets_ = {
        c.tenant: api.get("/v1/tenant", headers=c.headers).json()["webhook_secret"]
        for c in (teams.a, teams.b)
    }
    a_secret, b_secret = secrets_[teams.a.tenant], secrets_[teams.b.tenant]
    assert a_secret.startswith("whsec_") and a_secret != b_secret
    body = b'{"job_id":"x","status":"succeeded"}'
    headers = signing.signed_headers(a_secret, "msg_1", body, now=1_800_000_000)
    signing.verify(body, headers, a_secret, now=1_800_000_010)
    with pytest.raises(signing.SignatureError):
        signing.verify(body, headers, b_secret, now=1_800_000_010)  # B's receiver cannot be fooled by A's
    with pytest.raises(signing.SignatureError):
        signing.verify(body, headers, a_secret, now=1_800_000_000 + 3600)  # a replay an hour later
    # The worker signs a job's webhooks with its tenant's secret.
    video = make_video(tmp_path / "signed.mp4", frames=12, size=(96, 64))
    with video.open("rb") as f:
        job = api.post(
            "/v1/videos", files={"file": ("v.mp4", f, "video/mp4")}, headers=teams.a.headers
        ).json()
    engine = create_db_engine(settings.resolved_database_url)
    with session_factory(engine)() as session:
        assert secret_for(session, uuid.UUID(job["id"]), settings) == a_secret
    engine.dispose()


@pytest.mark.parametrize("raw", ["[0.5, 1e400]", "[NaN, 1]"])
def test_a_tampered_cursor_is_422(api: TestClient, teams: Teams, raw: str) -> None:
    cursor = base64.urlsafe_b64encode(raw.encode()).decode()
    response = api.get("/v1/videos", params={"label": "x", "cursor": cursor}, headers=teams.a.headers)
    assert response.status_code == 422


def test_an_invalid_bucket_name_is_422_not_503(api: TestClient, teams: Teams) -> None:
    response = api.post("/v1/videos", json={"source_uri": "s3://Not_A_Bucket/x.mp4"}, headers=teams.a.headers)
    assert response.status_code == 422


def test_readyz_tells_no_host_or_port(api: TestClient) -> None:
    body = api.get("/readyz").text
    assert "127.0.0.1" not in body and "Error" not in body
