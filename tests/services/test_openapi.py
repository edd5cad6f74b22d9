"""schemathesis over the OpenAPI the API serves: no server errors, documented status codes, bodies
that match their schemas. A fixed seed and a bounded number of examples keep it fast and repeatable."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
import schemathesis.pytest
import uvicorn
from hypothesis import HealthCheck, seed, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from services.api.main import create_app
from services.core.config import Mode, Settings
from tests.platform_servers import free_port, wait_port

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def served(
    migrated_postgres_url: str, moto_endpoint: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """The API under uvicorn in this process, platform mode, with a key; base URL and key."""
    from pydantic import SecretStr

    from services.core.apikeys import create_api_key
    from services.core.db import create_db_engine, session_factory
    from tests.platform_servers import moto_client

    bucket = f"tsmindex-openapi-{time.monotonic_ns()}"
    moto_client(moto_endpoint).create_bucket(Bucket=bucket)
    config = Settings(
        mode=Mode.platform,
        api_keys_pepper=SecretStr("pepper"),
        database_url=migrated_postgres_url,
        redis_url=redis_url,
        storage_backend="s3",
        s3_endpoint_url=moto_endpoint,
        s3_bucket=bucket,
        s3_access_key_id=SecretStr("test"),
        s3_secret_access_key=SecretStr("test"),
        model_version="openapi",
        rate_limit_per_minute=0,  # the fuzzer sends hundreds of requests in seconds
    )
    engine = create_db_engine(migrated_postgres_url)
    with session_factory(engine).begin() as session:
        _, key = create_api_key(session, config, name="openapi")
    engine.dispose()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}", key
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def api_schema(served: tuple[str, str]) -> Any:
    base_url, _ = served
    return schemathesis.openapi.from_url(f"{base_url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@seed(12)
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,  # the same examples on every run and machine
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_conforms(case: Any, served: tuple[str, str]) -> None:
    base_url, key = served
    checks = CHECKS
    if (case.method, case.path) == ("POST", "/v1/moments/similar"):
        # This API process has no model to embed a clip: its documented answer is 503.
        checks = [status_code_conformance, response_schema_conformance]
    case.call_and_validate(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, checks=checks)
