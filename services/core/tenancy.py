"""Tenant scoping of queries: a caller sees its own tenant's rows and answers about another
tenant's exactly as about a missing one. ``tenant_id`` None means every tenant (an admin)."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from services.core.models import Backfill, Job, Tenant, Video

Owned = TypeVar("Owned", Video, Job, Backfill)
Q = TypeVar("Q", bound=Select[Any])


def scoped(query: Q, column: InstrumentedAttribute[uuid.UUID], tenant_id: uuid.UUID | None) -> Q:
    """``query`` limited to ``tenant_id``'s rows of ``column``'s table."""
    return query if tenant_id is None else query.where(column == tenant_id)


def get_owned(
    session: Session, model: type[Owned], row_id: uuid.UUID, tenant_id: uuid.UUID | None, **options: Any
) -> Owned | None:
    """The row, or None when it does not exist or belongs to another tenant."""
    row = session.get(model, row_id, **options)
    if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
        return None
    return row


def tenant(session: Session, tenant_id: uuid.UUID) -> Tenant:
    return session.get_one(Tenant, tenant_id)
