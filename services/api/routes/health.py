"""Liveness, readiness (database, Redis, TorchServe) and Prometheus metrics.

Both health answers are open to anyone, so they name a dependency that is down and nothing else:
no host, port or exception text (those go to the log)."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import redis
from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from services.api.deps import SessionDep, SettingsDep
from services.core.config import Settings
from services.core.metrics import exposition

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _check_redis(settings: Settings) -> None:
    client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=settings.io_timeout_s, socket_connect_timeout=2.0
    )
    try:
        client.ping()
    finally:
        client.close()


def _torchserve_token(settings: Settings) -> str | None:
    if settings.torchserve_token is not None:
        return settings.torchserve_token.get_secret_value()
    if settings.torchserve_key_file is not None and settings.torchserve_key_file.exists():
        return str(json.loads(settings.torchserve_key_file.read_text())["inference"]["key"])
    return None


def _check_torchserve(settings: Settings) -> None:
    token = _torchserve_token(settings)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{settings.torchserve_inference_url.rstrip('/')}/ping"
    response = httpx.get(url, headers=headers, timeout=2.0)
    response.raise_for_status()
    if response.json().get("status") != "Healthy":
        raise RuntimeError(f"TorchServe reports {response.text[:200]}")


@router.get("/readyz", responses={503: {"description": "a dependency is down: `checks` names it"}})
async def readyz(session: SessionDep, settings: SettingsDep, response: Response) -> dict[str, Any]:
    checks: dict[str, str] = {}

    def check_db() -> None:
        session.execute(text("SELECT 1"))

    probes = {"database": check_db, "redis": lambda: _check_redis(settings)}
    if settings.inference_backend == "torchserve":
        probes["torchserve"] = lambda: _check_torchserve(settings)
    for name, probe in probes.items():
        try:
            await run_in_threadpool(probe)
            checks[name] = "ok"
        except Exception:  # any failure means not ready; the cause is logged, not answered
            log.warning("readiness: %s is down", name, exc_info=True)
            checks[name] = "down"
    ready = all(v == "ok" for v in checks.values())
    response.status_code = status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE
    return {"status": "ready" if ready else "not_ready", "checks": checks}


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, settings: SettingsDep) -> Response:
    """This process's metrics, then the shared state read at scrape time (queue, jobs, backfills).

    Served here unless ``api_metrics_port`` gives them a port of their own."""
    if settings.api_metrics_port:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Not Found")
    body = exposition(request.app.state.metrics_registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
