from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.api.main import create_app
from services.core.apikeys import create_api_key
from services.core.config import Mode, Settings
from services.core.db import create_db_engine, session_factory
from services.core.models import DEFAULT_TENANT_ID, Tenant
from services.core.queue import INDEX_QUEUE
from tests.platform_servers import *  # noqa: F403


@pytest.fixture()
def platform_settings(
    migrated_postgres_url: str, moto_endpoint: str, s3_bucket: str, redis_url: str
) -> Settings:
    """Platform mode on this run's Postgres database, Redis db and S3 bucket, with its own model
    version so that each test has an index of its own."""
    return Settings(
        mode=Mode.platform,
        api_keys_pepper=SecretStr("pepper"),
        database_url=migrated_postgres_url,
        redis_url=redis_url,
        storage_backend="s3",
        s3_endpoint_url=moto_endpoint,
        s3_bucket=s3_bucket,
        s3_access_key_id=SecretStr("test"),
        s3_secret_access_key=SecretStr("test"),
        model_version=f"v-{uuid.uuid4().hex[:8]}",
    )


@pytest.fixture()
def api_key(settings: Settings) -> str:
    """A new API key in the database ``settings`` names (each test module supplies ``settings``), of
    the default tenant: the rows tests write directly belong to it."""
    engine = create_db_engine(settings.resolved_database_url)
    with session_factory(engine).begin() as session:
        _, key = create_api_key(
            session, settings, name="test", tenant=session.get_one(Tenant, DEFAULT_TENANT_ID)
        )
    engine.dispose()
    return key


@pytest.fixture()
def client(settings: Settings, api_key: str) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {api_key}"}) as c:
        yield c


@pytest.fixture()
def broker(settings: Settings) -> Iterator[redis.Redis]:
    """The index queue on this run's Redis database, empty before and after the test."""
    r = redis.Redis.from_url(settings.redis_url)
    r.delete(INDEX_QUEUE)
    yield r
    r.delete(INDEX_QUEUE)
