"""`tsmindex apikey create | list | revoke | rotate` as an operator runs them (embedded SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from services.core.apikeys import is_active
from services.core.config import get_settings
from services.core.db import create_db_engine, session_factory
from services.core.models import ApiKey, Tenant
from workers.cli import app


@pytest.fixture()
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    for name in ("TSMINDEX_DATABASE_URL", "TSMINDEX_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TSMINDEX_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("TSMINDEX_API_KEYS_PEPPER", "pepper")
    monkeypatch.setenv("COLUMNS", "250")  # the whole table, however narrow the terminal
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def _keys() -> dict[str, tuple[ApiKey, str]]:
    engine = create_db_engine(get_settings().resolved_database_url)
    with session_factory(engine)() as session:
        rows = session.execute(
            select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id)
        ).tuples()
        found = {key.prefix: (key, tenant) for key, tenant in rows}
    engine.dispose()
    return found


def test_create_list_rotate_and_revoke(runner: CliRunner) -> None:
    first = runner.invoke(app, ["apikey", "create", "team-a"])
    assert first.exit_code == 0, first.output
    ci = runner.invoke(
        app, ["apikey", "create", "ci", "--tenant", "team-a", "--scopes", "read", "--expires", "30"]
    )
    assert ci.exit_code == 0, ci.output
    keys = _keys()
    a_key, a_tenant = keys[first.stdout.strip()[:12]]
    ci_key, ci_tenant = keys[ci.stdout.strip()[:12]]
    assert (a_tenant, ci_tenant, ci_key.scopes) == ("team-a", "team-a", ["read"])
    assert a_key.scopes == ["backfill", "read", "write"] and ci_key.expires_at is not None
    assert runner.invoke(app, ["apikey", "create", "x", "--tenant", "nobody"]).exit_code == 2
    assert runner.invoke(app, ["apikey", "create", "x", "--scopes", "root"]).exit_code == 2

    listing = runner.invoke(app, ["apikey", "list"], terminal_width=250)
    assert listing.exit_code == 0 and a_key.prefix in listing.output and "team-a" in listing.output

    rotated = runner.invoke(app, ["apikey", "rotate", a_key.prefix, "--grace", "2"])
    assert rotated.exit_code == 0, rotated.output
    keys = _keys()
    old, new = keys[a_key.prefix][0], keys[rotated.stdout.strip()[:12]][0]
    assert old.replaced_by == new.id and is_active(old) and is_active(new)
    assert not is_active(old, now=datetime.now(UTC).replace(year=datetime.now(UTC).year + 1))

    assert runner.invoke(app, ["apikey", "revoke", str(new.id)]).exit_code == 0
    assert not is_active(_keys()[new.prefix][0])
    assert runner.invoke(app, ["apikey", "revoke", "tsm_nosuchkey"]).exit_code == 2
