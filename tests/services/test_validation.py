"""Bad input answers 4xx, never 500 or 503; the open operations endpoints tell nothing about hosts."""

from __future__ import annotations

import base64

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.api.main import create_app
from services.core.config import Settings
from services.core.search import Cursor
from services.core.signing import new_secret
from tests.platform_servers import free_port, wait_port


@pytest.fixture()
def settings(platform_settings: Settings) -> Settings:
    return platform_settings


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode()


@pytest.mark.parametrize(
    "raw",
    [
        "[0.5, 1e400]",
        "[NaN, 1]",
        "[0.5, 1e30]",
        "[true, 1]",
        "[0.5, 1.5]",
        '["x", 1]',
        "[0.5, 99999999999999999999]",
    ],
)
@pytest.mark.parametrize("path", ["/v1/videos", "/v1/moments"])
def test_a_tampered_search_cursor_is_422(client: TestClient, raw: str, path: str) -> None:
    response = client.get(path, params={"label": "x", "cursor": _cursor(raw)})
    assert response.status_code == 422
    assert (response.json()["detail"][0]["loc"], response.json()["detail"][0]["msg"]) == (
        ["query", "cursor"],
        "invalid cursor",
    )


def test_a_cursor_round_trips() -> None:
    assert Cursor.decode(Cursor(0.25, 7).encode()) == Cursor(0.25, 7)


@pytest.mark.parametrize("raw", ['["2024-01-01T00:00:00", "not-a-uuid"]', "[1, 2]", '["9999-99-99", 1]'])
def test_a_tampered_jobs_cursor_is_422(client: TestClient, raw: str) -> None:
    assert client.get("/v1/jobs", params={"cursor": _cursor(raw)}).status_code == 422


@pytest.mark.parametrize("bucket", ["UPPER", "a", "under_score", "-dash", "x" * 64, "a..b/../"])
def test_an_invalid_bucket_name_is_422(client: TestClient, bucket: str) -> None:
    video = client.post("/v1/videos", json={"source_uri": f"s3://{bucket}/x.mp4"})
    assert video.status_code == 422
    assert video.json()["detail"][0]["loc"] == ["body", "source_uri"]
    backfill = client.post("/v1/backfills", json={"source_uri": f"s3://{bucket}/x/"})
    assert backfill.status_code == 422
    output = client.post(
        "/v1/backfills", json={"source_uri": "s3://fine/x/", "output_uri": f"s3://{bucket}/o"}
    )
    assert output.status_code == 422


def test_readyz_names_the_dependency_that_is_down_and_nothing_else(settings: Settings) -> None:
    port = free_port()
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
    with TestClient(create_app(down)) as anon:
        response = anon.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "not_ready", "checks": {"database": "ok", "redis": "down"}}
    assert str(port) not in response.text


def test_metrics_can_require_a_key(settings: Settings, api_key: str) -> None:
    with TestClient(create_app(settings.model_copy(update={"metrics_require_key": True}))) as anon:
        assert anon.get("/metrics").status_code == 401
        keyed = anon.get("/metrics", headers={"Authorization": f"Bearer {api_key}"})
    assert keyed.status_code == 200 and "tsmindex_" in keyed.text
    with TestClient(create_app(settings)) as anon:
        assert anon.get("/metrics").status_code == 200  # the default: open, for a Prometheus beside it


def test_metrics_can_have_a_loopback_port_of_their_own(settings: Settings) -> None:
    port = free_port()
    separate = settings.model_copy(update={"api_metrics_port": port})
    with TestClient(create_app(separate)) as anon:
        wait_port(port)
        assert anon.get("/metrics").status_code == 404
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert scraped.status_code == 200 and "tsmindex_queue" in scraped.text


@pytest.mark.parametrize(
    "hook",
    [
        "http://169.254.169.254/latest/meta-data/",
        "https://127.0.0.1/x",
        "https://[::1]/x",
        "http://hooks.example/x",
    ],
)
def test_a_webhook_url_that_delivery_would_refuse_is_422_at_submission(
    settings: Settings, api_key: str, hook: str
) -> None:
    signed = settings.model_copy(update={"webhook_secret": SecretStr(new_secret())})
    with TestClient(create_app(signed), headers={"Authorization": f"Bearer {api_key}"}) as client:
        response = client.post("/v1/videos", json={"source_uri": "s3://fine/x.mp4", "webhook_url": hook})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "webhook_url"]


@pytest.mark.parametrize("body", [b"\xff\x12\xc8\xa7\x1a", b"{", b"[]", b'{"source_uri": 5}'])
def test_a_malformed_json_source_is_422(client: TestClient, body: bytes) -> None:
    response = client.post("/v1/videos", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "body"


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/labels", {"model_version": "k\x00v"}),
        ("/v1/videos", {"label": "run\x00"}),
        ("/v1/moments", {"label": "x", "model_version": "\x00"}),
    ],
)
def test_a_nul_in_the_query_is_400_not_a_database_error(
    client: TestClient, path: str, params: dict[str, str]
) -> None:
    response = client.get(path, params=params)
    assert (response.status_code, response.json()) == (
        400,
        {"detail": "the URL may not contain NUL characters"},
    )
