"""Liveness, readiness (database, Redis, TorchServe) and Prometheus metrics."""

from __future__ import annotations

from typing import Any

import httpx
import redis
from fastapi import APIRouter, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from services.api.deps import SessionDep, SettingsDep
from services.core.config import Settings
from services.core.metrics import exposition

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


def _check_torchserve(settings: Settings) -> None:
    httpx.get(f"{settings.torchserve_inference_url.rstrip('/')}/ping", timeout=2.0).raise_for_status()


@router.get("/readyz")
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
        except Exception as exc:  # any failure means not ready; the reason is reported
            checks[name] = f"{type(exc).__name__}: {exc}"[:300]
    ready = all(v == "ok" for v in checks.values())
    response.status_code = status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE
    return {"status": "ready" if ready else "not_ready", "checks": checks}


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """This process's metrics, then the shared state read at scrape time (queue, jobs, backfills)."""
    body = exposition(request.app.state.metrics_registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
