"""FastAPI application factory. Engines and clients are created in the lifespan, not at import.

Under load the API answers, never 500s: an exhausted database pool, a database or object store that
does not answer, or too many uploads at once answer 503 with ``Retry-After``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import redis
import sqlalchemy.exc
from fastapi import FastAPI, Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric
from sqlalchemy.engine import make_url

from services.api.guard import GUARDED_RESPONSES, GuardMiddleware
from services.api.routes import (
    admin,
    backfills,
    compare,
    health,
    jobs,
    labels,
    moments,
    reindex,
    similar,
    tenant,
    uploads,
    videos,
    windows,
)
from services.core import metrics
from services.core.config import Mode, Settings, get_settings
from services.core.db import db_engine, session_factory, upgrade_database
from services.core.indexing.errors import IndexingError, reason_for
from services.core.queue import INDEX_QUEUE, create_producer
from services.core.ratelimit import RateLimiter
from services.core.similar import ClipEmbedder
from services.core.storage import make_storage, s3_client


class _ScrapeCollector:
    """What ``/metrics`` answers, for the exporter on a port of its own."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from metrics.process_registry().collect()
        yield from self.registry.collect()


def _rate_limiter(settings: Settings) -> RateLimiter | None:
    # Embedded mode serves one user from one process and may have no Redis at all.
    if settings.mode is not Mode.platform:
        return None
    return RateLimiter(
        redis.Redis.from_url(settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0),
        per_minute=settings.rate_limit_per_minute,
        max_uploads=settings.max_concurrent_uploads,
        upload_ttl_s=settings.upload_slot_ttl_s,
    )


def create_app(settings: Settings | None = None, *, clip_embedder: ClipEmbedder | None = None) -> FastAPI:
    """The API; ``clip_embedder`` (given by ``workers.api_app``, which has the model) answers
    search by uploaded clip, which is refused with 503 without it."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = db_engine(settings)
        if make_url(settings.resolved_database_url).get_backend_name() == "sqlite":
            # Embedded mode migrates its own file; Postgres is migrated by `tsmindex db upgrade`.
            upgrade_database(engine)
        app.state.settings = settings
        app.state.clip_embedder = clip_embedder
        app.state.sessions = session_factory(engine)
        app.state.storage = make_storage(settings)
        app.state.source_s3 = s3_client(settings)
        app.state.producer = create_producer(settings)
        app.state.upload_slots = uploads.UploadSlots(settings.api_max_concurrent_uploads)
        app.state.metrics_registry = CollectorRegistry(auto_describe=False)
        app.state.metrics_registry.register(
            metrics.PlatformCollector(app.state.sessions, settings.redis_url, queues=[INDEX_QUEUE])
        )
        app.state.rate_limiter = _rate_limiter(settings)
        exporter = None
        if settings.api_metrics_port:
            exporter, _ = start_http_server(
                settings.api_metrics_port,
                addr=settings.api_metrics_host,
                registry=_ScrapeCollector(app.state.metrics_registry),
            )
        try:
            yield
        finally:
            if exporter is not None:
                exporter.shutdown()
                exporter.server_close()
            if app.state.rate_limiter is not None:
                app.state.rate_limiter.client.close()
            app.state.producer.close()
            engine.dispose()

    app = FastAPI(
        title="tsmindex",
        summary="Index videos by the actions they show (Temporal Shift Module).",
        version="1",
        lifespan=lifespan,
    )
    app.add_middleware(GuardMiddleware, settings=settings)
    app.include_router(health.router)
    routers = (
        uploads.router,
        videos.router,
        jobs.router,
        labels.router,
        moments.router,
        windows.router,
        similar.router,
        backfills.router,
        compare.router,
        reindex.router,
        admin.router,
        tenant.router,
    )
    for router in routers:
        app.include_router(router, responses=GUARDED_RESPONSES)
    for error in (
        sqlalchemy.exc.OperationalError,
        sqlalchemy.exc.InterfaceError,
        sqlalchemy.exc.TimeoutError,
    ):
        app.add_exception_handler(error, _unavailable)
    app.add_exception_handler(IndexingError, _unavailable)
    app.add_exception_handler(RequestValidationError, _invalid)
    return app


log = logging.getLogger(__name__)
RETRY_AFTER_S = "10"


async def _invalid(request: Request, exc: Exception) -> Response:
    """FastAPI's 422, written as ASCII JSON: an input with a lone surrogate cannot crash it (500)."""
    assert isinstance(exc, RequestValidationError)
    body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
    return Response(body, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, media_type="application/json")


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A server we depend on is away or saturated: the client may retry, so 503, not 500."""
    reason = reason_for(exc)
    if not reason.retryable:
        log.error("%s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)
        return JSONResponse({"detail": "internal error"}, status_code=status.HTTP_500_INTERNAL_SERVER_ERROR)
    log.warning("%s %s: %s: %s", request.method, request.url.path, reason, exc)
    return JSONResponse(
        {"detail": f"temporarily unavailable ({reason}); retry", "reason": str(reason)},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": RETRY_AFTER_S},
    )
