"""`tsmindex apikey create | list | revoke | rotate`: tenants' keys, from the database directly."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from workers.cli.app import app

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from services.core.config import Settings

apikey_app = typer.Typer(help="API keys and their tenants.", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")

notes = Console(stderr=True)  # the key alone goes to stdout: scripts capture it


@contextmanager
def _session() -> Iterator[tuple[Session, Settings]]:
    from services.core.config import get_settings
    from services.core.db import create_db_engine, session_factory, upgrade_database

    settings = get_settings()
    engine = create_db_engine(settings.resolved_database_url)
    if engine.dialect.name == "sqlite":
        upgrade_database(engine)
    try:
        with session_factory(engine).begin() as session:
            yield session, settings
    finally:
        engine.dispose()


def _fail(message: str) -> typer.Exit:
    notes.print(f"[red]{message}[/red]")
    return typer.Exit(2)


@apikey_app.command("create")
def create_cmd(
    name: Annotated[str, typer.Argument(help="who or what the key is for")],
    tenant: Annotated[str | None, typer.Option(help="an existing tenant (default: the tenant NAME)")] = None,
    scopes: Annotated[
        str, typer.Option(help="comma-separated: read, write, backfill, admin")
    ] = "read,write,backfill",
    expires_in_days: Annotated[float | None, typer.Option("--expires", help="days until it expires")] = None,
) -> None:
    """Create a key (printed once; only its hash is stored), in the tenant NAME unless --tenant."""
    from services.core.apikeys import ApiKeyError, create_api_key, tenant_named

    expires_at = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    with _session() as (session, settings):
        owner = tenant_named(session, tenant) if tenant else None
        if tenant and owner is None:
            raise _fail(f"no tenant named {tenant!r}")
        try:
            row, key = create_api_key(
                session, settings, name=name, tenant=owner, scopes=scopes.split(","), expires_at=expires_at
            )
        except ApiKeyError as exc:
            raise _fail(str(exc)) from exc
        prefix, tenant_name = row.prefix, tenant or name
    typer.echo(key)
    notes.print(
        f"[dim]key {prefix}… created in tenant {tenant_name!r}; store it now, it is not shown again[/dim]"
    )


@apikey_app.command("list")
def list_cmd() -> None:
    """Every key: its prefix, tenant, scopes, and whether it is active."""
    from services.core.apikeys import is_active, list_api_keys

    table = Table("id", "prefix", "name", "tenant", "scopes", "expires", "revoked", "active")
    with _session() as (session, _):
        for key, tenant in list_api_keys(session):
            table.add_row(
                str(key.id),
                key.prefix,
                key.name,
                tenant.name,
                ",".join(key.scopes),
                f"{key.expires_at:%Y-%m-%d %H:%M}" if key.expires_at else "",
                f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "",
                "yes" if is_active(key) else "no",
            )
    Console().print(table)


@apikey_app.command("revoke")
def revoke_cmd(key: Annotated[str, typer.Argument(help="the key's id or prefix")]) -> None:
    """Revoke a key now."""
    from services.core.apikeys import ApiKeyError, find_api_key, revoke_api_key

    with _session() as (session, _):
        try:
            revoke_api_key(session, find_api_key(session, key))
        except ApiKeyError as exc:
            raise _fail(str(exc)) from exc
    notes.print(f"key {key} revoked")


@apikey_app.command("rotate")
def rotate_cmd(
    key: Annotated[str, typer.Argument(help="the key's id or prefix")],
    grace_hours: Annotated[float, typer.Option("--grace", help="hours the old key keeps working")] = 24.0,
) -> None:
    """Issue a replacement key (printed once); the old one works for the grace period, then stops."""
    from services.core.apikeys import ApiKeyError, find_api_key, rotate_api_key

    with _session() as (session, settings):
        try:
            new, clear = rotate_api_key(
                session, settings, find_api_key(session, key), grace=timedelta(hours=grace_hours)
            )
        except ApiKeyError as exc:
            raise _fail(str(exc)) from exc
        prefix = new.prefix
    typer.echo(clear)
    notes.print(f"[dim]key {prefix}… replaces {key}, which stops working in {grace_hours:g} h[/dim]")
