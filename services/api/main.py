"""FastAPI application factory. Engines and clients are created in the lifespan, not at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import make_url

from services.api.routes import backfills, compare, health, jobs, labels, moments, reindex, videos
from services.core import metrics
from services.core.config import Settings, get_settings
from services.core.db import create_db_engine, session_factory, upgrade_database
from services.core.queue import INDEX_QUEUE, create_producer
from services.core.storage import make_storage, s3_client


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_db_engine(settings.resolved_database_url)
        if make_url(settings.resolved_database_url).get_backend_name() == "sqlite":
            # Embedded mode migrates its own file; Postgres is migrated by `tsmindex db upgrade`.
            upgrade_database(engine)
        app.state.settings = settings
        app.state.sessions = session_factory(engine)
        app.state.storage = make_storage(settings)
        app.state.source_s3 = s3_client(settings)
        app.state.producer = create_producer(settings)
        app.state.metrics_registry = CollectorRegistry(auto_describe=False)
        app.state.metrics_registry.register(
            metrics.PlatformCollector(app.state.sessions, settings.redis_url, queues=[INDEX_QUEUE])
        )
        try:
            yield
        finally:
            app.state.producer.close()
            engine.dispose()

    app = FastAPI(
        title="tsmindex",
        summary="Index videos by the actions they show (Temporal Shift Module).",
        version="1",
        lifespan=lifespan,
    )
    app.include_router(health.router)
    app.include_router(videos.router)
    app.include_router(jobs.router)
    app.include_router(labels.router)
    app.include_router(moments.router)
    app.include_router(backfills.router)
    app.include_router(compare.router)
    app.include_router(reindex.router)
    return app
