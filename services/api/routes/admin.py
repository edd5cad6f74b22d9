"""Administration (admin scope): API keys of every tenant, and tenants' S3 allow-lists."""

from __future__ import annotations

import uuid
from datetime import timedelta

from fastapi import APIRouter, HTTPException, status
from sqlalchemy.orm import Session

from services.api.deps import SessionDep, SettingsDep, end_read
from services.api.guard import AdminDep
from services.api.schemas import (
    NOT_FOUND,
    AllowListRequest,
    KeyOut,
    KeyRequest,
    KeysOut,
    NewKeyOut,
    RotateRequest,
    TenantOut,
)
from services.core import apikeys
from services.core.models import ApiKey, Tenant

router = APIRouter(prefix="/v1/admin", tags=["admin"])


def key_out(key: ApiKey, tenant: Tenant) -> KeyOut:
    return KeyOut(
        id=key.id,
        prefix=key.prefix,
        name=key.name,
        tenant=tenant.name,
        scopes=key.scopes,
        created_at=key.created_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        replaced_by=key.replaced_by,
        active=apikeys.is_active(key),
    )


def _key(session: Session, key_id: uuid.UUID) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such key")
    return key


@router.get("/keys")
def list_keys(session: SessionDep, _caller: AdminDep) -> KeysOut:
    return KeysOut(items=[key_out(key, tenant) for key, tenant in apikeys.list_api_keys(session)])


@router.post("/keys", status_code=status.HTTP_201_CREATED, responses=NOT_FOUND)
def create_key(body: KeyRequest, session: SessionDep, settings: SettingsDep, _caller: AdminDep) -> NewKeyOut:
    """A key in the tenant `tenant` (which must exist), else in the tenant `name` (created if new)."""
    end_read(session)
    with session.begin():
        tenant = apikeys.tenant_named(session, body.tenant) if body.tenant else None
        if body.tenant and tenant is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such tenant")
        row, clear = apikeys.create_api_key(
            session, settings, name=body.name, tenant=tenant, scopes=body.scopes, expires_at=body.expires_at
        )
        return NewKeyOut(**key_out(row, session.get_one(Tenant, row.tenant_id)).model_dump(), key=clear)


@router.post("/keys/{key_id}/revoke", responses=NOT_FOUND)
def revoke_key(key_id: uuid.UUID, session: SessionDep, _caller: AdminDep) -> KeyOut:
    end_read(session)
    with session.begin():
        key = apikeys.revoke_api_key(session, _key(session, key_id))
        return key_out(key, session.get_one(Tenant, key.tenant_id))


@router.post("/keys/{key_id}/rotate", status_code=status.HTTP_201_CREATED, responses=NOT_FOUND)
def rotate_key(
    key_id: uuid.UUID, body: RotateRequest, session: SessionDep, settings: SettingsDep, _caller: AdminDep
) -> NewKeyOut:
    """A replacement key (shown once); the old one keeps working for `grace_s` seconds."""
    end_read(session)
    with session.begin():
        new, clear = apikeys.rotate_api_key(
            session, settings, _key(session, key_id), grace=timedelta(seconds=body.grace_s)
        )
        return NewKeyOut(**key_out(new, session.get_one(Tenant, new.tenant_id)).model_dump(), key=clear)


@router.put("/tenants/{name}/s3-allow", responses=NOT_FOUND)
def set_s3_allow(name: str, body: AllowListRequest, session: SessionDep, _caller: AdminDep) -> TenantOut:
    """The S3 locations (`bucket/key-glob`) the tenant's sources, backfills and outputs may use."""
    end_read(session)
    with session.begin():
        tenant = apikeys.tenant_named(session, name)
        if tenant is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such tenant")
        tenant.s3_allow = body.s3_allow
        return TenantOut(id=tenant.id, name=tenant.name, s3_allow=tenant.s3_allow)
