"""Where a tenant may point the platform's S3 credentials: sources, backfill prefixes, outputs.

Patterns are ``bucket/key-glob`` (``media/cam7/*``, ``exports-*/*``; ``*`` alone: anywhere). A
tenant's own list (admin API) wins over the deployment's default (``TSMINDEX_S3_ALLOW``); with no
list at all every bucket is allowed. Whatever the lists say, the platform's own stored uploads
(``uploads/`` in its storage bucket) are never a source or an output: they hold every tenant's bytes.

The check runs before any S3 call and answers one message, so a refusal tells nothing about
whether the object exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from services.core.config import Settings
from services.core.models import Tenant

UPLOADS_PREFIX = "uploads/"


class OutsideAllowListError(Exception):
    """An S3 location outside what the caller's tenant may use."""

    def __init__(self, uri: str) -> None:
        super().__init__(f"{uri} is outside the S3 locations this tenant may use")
        self.uri = uri


def _split(uri: str) -> tuple[str, str]:
    rest = uri.removeprefix("s3://")
    bucket, _, key = rest.partition("/")
    return bucket, key


def patterns_for(tenant: Tenant | None, settings: Settings) -> Sequence[str] | None:
    """The tenant's patterns, else the deployment's; None: no list, every bucket."""
    if tenant is not None and tenant.s3_allow is not None:
        return tenant.s3_allow
    return settings.s3_allow


def permits(uri: str, patterns: Sequence[str] | None, settings: Settings) -> bool:
    bucket, key = _split(uri)
    if settings.storage_backend == "s3" and bucket == settings.s3_bucket and key.startswith(UPLOADS_PREFIX):
        return False
    if patterns is None:
        return True
    # A prefix (backfill, output) is allowed when everything under it would be.
    probe = f"{bucket}/{key}"
    return any(pattern == "*" or fnmatchcase(probe, pattern) for pattern in patterns)


def check(uri: str, tenant: Tenant | None, settings: Settings) -> None:
    """Raise ``OutsideAllowListError`` unless ``tenant`` may use ``uri``."""
    if not permits(uri, patterns_for(tenant, settings), settings):
        raise OutsideAllowListError(uri)
