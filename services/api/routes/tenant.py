"""The caller's own tenant: its name, S3 allow-list and the secret its webhooks are signed with."""

from __future__ import annotations

from fastapi import APIRouter

from services.api.deps import SessionDep, SettingsDep
from services.api.guard import WriteDep
from services.api.schemas import OwnTenantOut
from services.core import allowlist
from services.core.models import Tenant

router = APIRouter(prefix="/v1/tenant", tags=["tenant"])


@router.get("")
def own_tenant(session: SessionDep, settings: SettingsDep, caller: WriteDep) -> OwnTenantOut:
    """Write scope: whoever submits webhooks needs the secret to verify them."""
    tenant = session.get_one(Tenant, caller.tenant_id)
    secret = tenant.webhook_secret or (
        settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    )
    patterns = allowlist.patterns_for(tenant, settings)
    return OwnTenantOut(
        id=tenant.id,
        name=tenant.name,
        s3_allow=list(patterns) if patterns is not None else None,
        webhook_secret=secret,
    )
