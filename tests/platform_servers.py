"""Fixtures for the platform's real servers: a throwaway Postgres database, a moto S3 server and a
Redis database number, each private to one test run and removed afterwards.

Import the fixtures into a conftest.py (``from tests.platform_servers import *``)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from workers.benchmarks.harness.ports import free_port, wait_port

PG_ADMIN_DSN = os.environ.get("TSMINDEX_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test")

__all__ = [
    "free_port",
    "migrated_postgres_url",
    "moto_endpoint",
    "pg_database",
    "postgres_url",
    "private_postgres_url",
    "redis_url",
    "s3_bucket",
    "tiny_checkpoint",
    "wait_port",
]


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """Name of a fresh Postgres database, dropped after the run."""
    import psycopg

    name = f"tsmindex_test_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url(pg_database: str) -> str:
    params = dict(part.split("=", 1) for part in PG_ADMIN_DSN.split())
    return (
        f"postgresql+psycopg://{params.get('user', 'postgres')}@{params.get('host', '127.0.0.1')}:"
        f"{params.get('port', '5432')}/{pg_database}"
    )


@pytest.fixture(scope="session")
def migrated_postgres_url(postgres_url: str) -> str:
    """The run's Postgres database with the schema at the latest migration."""
    from services.core.db import create_db_engine, upgrade_database

    engine = create_db_engine(postgres_url)
    try:
        upgrade_database(engine)
    finally:
        engine.dispose()
    return postgres_url


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new, migrated Postgres database, dropped afterwards: for tests whose rows are
    global to a database (the served-model registry) and must not meet other tests'."""
    import psycopg

    from services.core.db import create_db_engine, upgrade_database

    name = f"tsmindex_test_{secrets.token_hex(4)}"
    params = dict(part.split("=", 1) for part in PG_ADMIN_DSN.split())
    url = (
        f"postgresql+psycopg://{params.get('user', 'postgres')}@{params.get('host', '127.0.0.1')}:"
        f"{params.get('port', '5432')}/{name}"
    )
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        engine = create_db_engine(url)
        try:
            upgrade_database(engine)
        finally:
            engine.dispose()
        yield url
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def private_postgres_url() -> Iterator[str]:
    """A migrated Postgres database of this test module's own."""
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a moto S3 server on a free loopback port."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    moto = Path(sys.executable).with_name("moto_server")
    with log.open("wb") as out:
        proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out)
    try:
        wait_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def moto_client(endpoint: str, *, access_key: str = "test", secret_key: str = "test") -> Any:
    """A boto3 S3 client of the moto server at ``endpoint``."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
    )


@pytest.fixture()
def s3_bucket(moto_endpoint: str) -> str:
    name = f"tsmindex-test-{secrets.token_hex(4)}"
    moto_client(moto_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis server of this test run's own on a free loopback port (database 0), stopped afterwards.

    A private server rather than a database number of the machine's Redis: a run that was killed
    leaves nothing behind, and concurrent runs never compete for the 16 database numbers.
    ``TSMINDEX_TEST_REDIS=host:port`` uses an empty database of that server instead."""
    external = os.environ.get("TSMINDEX_TEST_REDIS")
    if external:
        yield from _external_redis_db(external)
        return
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        [*command, "--dir", str(workdir), "--logfile", str(workdir / "redis.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc=proc)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _external_redis_db(host_port: str) -> Iterator[str]:
    import redis

    host, port = host_port.split(":")
    for db in secrets.SystemRandom().sample(range(1, 16), 15):
        client = redis.Redis(host=host, port=int(port), db=db)
        if client.dbsize() == 0:
            break
    else:
        raise RuntimeError("no empty Redis database number left")
    try:
        yield f"redis://{host}:{port}/{db}"
    finally:
        client.flushdb()
        client.close()


TINY_RESIZE, TINY_CROP = 72, 64


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random-init resnet18 TSM (Kinetics-400 classes) at a 64 px crop, in our format."""
    from workers.demo import write_random_checkpoint

    path = tmp_path_factory.mktemp("model") / "tsm-random.pt"
    write_random_checkpoint(path, resize=TINY_RESIZE, crop=TINY_CROP)
    return path
