"""POST /v1/reindex against Postgres and Redis: a reindex row that the backfill task lists."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
import redis
from fastapi.testclient import TestClient

from services.core.config import Settings
from services.core.queue import BACKFILL_PREFIX_TASK, INDEX_QUEUE


@pytest.fixture()
def settings(platform_settings: Settings) -> Settings:
    return platform_settings


def _messages(broker: redis.Redis) -> list[tuple[str, list[Any]]]:
    out = []
    for raw in reversed(cast(list[bytes], broker.lrange(INDEX_QUEUE, 0, -1))):
        headers = json.loads(raw)["headers"]
        out.append((headers["task"], json.loads(headers["argsrepr"].replace("'", '"'))))
    return out


def test_reindex_starts_a_backfill_of_kind_reindex(
    client: TestClient, settings: Settings, broker: redis.Redis
) -> None:
    served = f"{settings.model_name}:{settings.model_version}"
    response = client.post(
        "/v1/reindex",
        json={"model": served, "where": {"label": "juggling balls", "since": "2024-01-01"}, "top_k": 3},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert response.headers["Location"] == f"/v1/backfills/{body['id']}"
    assert (body["status"], body["source_uri"], body["options"]) == (
        "listing",
        "index:label=juggling balls&since=2024-01-01T00:00:00+00:00",
        {"top_k": 3},
    )
    assert body["model"] == {"name": settings.model_name, "version": settings.model_version}
    assert _messages(broker) == [(BACKFILL_PREFIX_TASK, [body["id"]])]
    assert client.get(f"/v1/backfills/{body['id']}").json()["filters"]["label"] == "juggling balls"


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        ({"model": "tsm:never-served"}, "'tsm:never-served' is not served"),
        ({"model": "tsm"}, None),  # the name alone: its served version
        ({"model": "{served}", "where": {"colour": "red"}}, "expected KEY=VALUE"),
        ({"model": "{served}", "where": {"min_score": "2"}}, "min_score is between 0 and 1"),
    ],
)
def test_reindex_refuses_what_it_cannot_do(
    client: TestClient,
    settings: Settings,
    broker: redis.Redis,
    request_body: dict[str, Any],
    message: str | None,
) -> None:
    served = f"{settings.model_name}:{settings.model_version}"
    body = {k: v.replace("{served}", served) if isinstance(v, str) else v for k, v in request_body.items()}
    response = client.post("/v1/reindex", json=body)
    if message is None:
        assert response.status_code == 202 and response.json()["model"]["version"] == settings.model_version
        return
    assert response.status_code == 422
    assert message in json.dumps(response.json()["detail"])
    assert _messages(broker) == []
