"""Tenants and their API keys: issue, list, revoke, rotate. The key is shown once; only its keyed
hash is stored. The CLI (`tsmindex apikey ...`) and the admin API both call these functions; they
add to the caller's session and never commit."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.core.config import Settings
from services.core.models import ApiKey, Tenant
from services.core.security import generate_api_key, hash_api_key
from services.core.signing import new_secret

SCOPES = ("read", "write", "backfill", "admin")  # "admin" implies every other scope
DEFAULT_SCOPES = ("read", "write", "backfill")


class ApiKeyError(Exception):
    """A key or tenant operation that cannot be done as asked."""


class UnknownScopeError(ApiKeyError):
    """A scope that does not exist."""


class NotFoundError(ApiKeyError):
    """No such key or tenant."""


def pepper(settings: Settings) -> str:
    return settings.api_keys_pepper.get_secret_value() if settings.api_keys_pepper else ""


def _now() -> datetime:
    return datetime.now(UTC)


def check_scopes(scopes: Iterable[str]) -> list[str]:
    chosen = sorted(set(scopes))
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown:
        raise UnknownScopeError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    return chosen


def tenant_named(session: Session, name: str) -> Tenant | None:
    return session.scalar(select(Tenant).where(Tenant.name == name))


def create_api_key(
    session: Session,
    settings: Settings,
    *,
    name: str,
    tenant: Tenant | None = None,
    scopes: Iterable[str] = DEFAULT_SCOPES,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """A new key (and its clear text) in ``tenant``, else in the tenant called ``name`` (created
    when there is none)."""
    if tenant is None:
        # A new tenant gets its own webhook secret: one tenant's receivers cannot forge another's.
        tenant = tenant_named(session, name) or Tenant(name=name, webhook_secret=new_secret())
        session.add(tenant)
        session.flush()
    key = generate_api_key()
    row = ApiKey(
        tenant_id=tenant.id,
        name=name,
        prefix=key[:12],
        key_hash=hash_api_key(key, pepper(settings)),
        scopes=check_scopes(scopes),
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return row, key


def list_api_keys(session: Session, *, tenant_id: uuid.UUID | None = None) -> Sequence[tuple[ApiKey, Tenant]]:
    """Keys with their tenants, oldest first (only ``tenant_id``'s when given)."""
    query = select(ApiKey, Tenant).join(Tenant, Tenant.id == ApiKey.tenant_id).order_by(ApiKey.created_at)
    if tenant_id is not None:
        query = query.where(ApiKey.tenant_id == tenant_id)
    return session.execute(query).tuples().all()


def find_api_key(session: Session, ref: str) -> ApiKey:
    """A key by its id or its shown prefix (``tsm_xxxxxxxx``)."""
    try:
        row = session.get(ApiKey, uuid.UUID(ref))
    except ValueError:
        matches = session.scalars(select(ApiKey).where(ApiKey.prefix == ref)).all()
        row = matches[0] if len(matches) == 1 else None
    if row is None:
        raise NotFoundError(f"no API key {ref!r}")
    return row


def revoke_api_key(session: Session, key: ApiKey, *, at: datetime | None = None) -> ApiKey:
    """Revoke ``key`` now (or at ``at``); a key already revoked earlier stays as it is."""
    when = at or _now()
    if key.revoked_at is None or key.revoked_at > when:
        key.revoked_at = when
    return key


def rotate_api_key(
    session: Session, settings: Settings, key: ApiKey, *, grace: timedelta = timedelta(hours=24)
) -> tuple[ApiKey, str]:
    """A new key like ``key`` (tenant, scopes, expiry); the old one keeps working for ``grace``."""
    tenant = session.get_one(Tenant, key.tenant_id)
    new, clear = create_api_key(
        session, settings, name=key.name, tenant=tenant, scopes=key.scopes, expires_at=key.expires_at
    )
    revoke_api_key(session, key, at=_now() + grace)
    key.replaced_by = new.id
    return new, clear


def is_active(key: ApiKey, *, now: datetime | None = None) -> bool:
    current = now or _now()
    return all(t is None or _aware(t) > current for t in (key.revoked_at, key.expires_at))


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; they were stored in UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
