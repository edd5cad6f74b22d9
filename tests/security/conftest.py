"""Two tenants (and an administrator) sharing one platform-mode deployment: Postgres, Redis and a
moto S3 server of the test run's own."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.api.main import create_app
from services.core.apikeys import create_api_key
from services.core.config import Mode, Settings
from services.core.db import create_db_engine, session_factory
from tests.platform_servers import *  # noqa: F403


@pytest.fixture()
def settings(migrated_postgres_url: str, moto_endpoint: str, s3_bucket: str, redis_url: str) -> Settings:
    return Settings(
        mode=Mode.platform,
        api_keys_pepper=SecretStr("pepper"),
        webhook_secret=SecretStr("whsec_" + "QUJD" * 8),
        database_url=migrated_postgres_url,
        redis_url=redis_url,
        storage_backend="s3",
        s3_endpoint_url=moto_endpoint,
        s3_bucket=s3_bucket,
        s3_access_key_id=SecretStr("test"),
        s3_secret_access_key=SecretStr("test"),
        model_version=f"v-{uuid.uuid4().hex[:8]}",
        rate_limit_per_minute=0,
    )


@dataclass(frozen=True)
class Caller:
    key: str
    tenant: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass(frozen=True)
class Teams:
    a: Caller
    b: Caller
    admin: Caller
    reader: Caller  # team A, read scope only


def make_key(
    settings: Settings, name: str, *, tenant: str | None = None, scopes: tuple[str, ...] = ()
) -> str:
    from services.core.apikeys import DEFAULT_SCOPES, tenant_named

    engine = create_db_engine(settings.resolved_database_url)
    with session_factory(engine).begin() as session:
        owner = tenant_named(session, tenant) if tenant else None
        _, key = create_api_key(session, settings, name=name, tenant=owner, scopes=scopes or DEFAULT_SCOPES)
    engine.dispose()
    return key


@pytest.fixture()
def teams(settings: Settings) -> Teams:
    suffix = secrets.token_hex(4)
    a, b, ops = f"team-a-{suffix}", f"team-b-{suffix}", f"ops-{suffix}"
    return Teams(
        a=Caller(make_key(settings, a), a),
        b=Caller(make_key(settings, b), b),
        admin=Caller(make_key(settings, ops, scopes=("admin",)), ops),
        reader=Caller(make_key(settings, f"{a}-reader", tenant=a, scopes=("read",)), a),
    )


@pytest.fixture()
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client
