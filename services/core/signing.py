"""Webhook signatures in the Standard Webhooks format (https://www.standardwebhooks.com).

Each delivery carries three headers:

- ``webhook-id``: the delivery's id (the same on a retry: receivers dedupe on it);
- ``webhook-timestamp``: Unix seconds when it was signed;
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` (space-separated when
  several secrets sign during a rotation).

Signing the id and the timestamp with the body stops a replay (an old timestamp is refused) and a
body moved to another delivery. Secrets are ``whsec_`` + base64 of random bytes, one per endpoint or
tenant, so one receiver's secret cannot forge deliveries to another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from enum import StrEnum

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_S = 300


class SignatureFailure(StrEnum):
    """Why a delivery was not accepted as ours."""

    missing_header = "missing_header"
    bad_timestamp = "bad_timestamp"
    too_old = "too_old"
    too_new = "too_new"
    mismatch = "mismatch"


class SignatureError(Exception):
    """A webhook delivery failed verification."""

    def __init__(self, reason: SignatureFailure) -> None:
        super().__init__(f"webhook signature rejected: {reason}")
        self.reason = reason


def new_secret() -> str:
    """A fresh ``whsec_`` secret (24 random bytes, as Standard Webhooks libraries generate)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def secret_bytes(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret; any other string is used as its UTF-8 bytes."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
        except binascii.Error as exc:
            raise ValueError("a whsec_ secret must be base64 after its prefix") from exc
    return secret.encode()


def sign(secret: str, delivery_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value of one delivery."""
    message = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), message, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, delivery_id: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    timestamp = int(time.time() if now is None else now)
    return {
        ID_HEADER: delivery_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, delivery_id, timestamp, body),
    }


def verify(
    body: bytes,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Raise ``SignatureError`` unless ``body`` and ``headers`` are a delivery signed with ``secret``
    within ``tolerance_s`` seconds of ``now``. ``headers`` lookups are case-insensitive."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        delivery_id, stamp, signatures = (lower[h] for h in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER))
    except KeyError as exc:
        raise SignatureError(SignatureFailure.missing_header) from exc
    try:
        timestamp = int(stamp)
    except ValueError as exc:
        raise SignatureError(SignatureFailure.bad_timestamp) from exc
    current = time.time() if now is None else now
    if timestamp < current - tolerance_s:
        raise SignatureError(SignatureFailure.too_old)
    if timestamp > current + tolerance_s:
        raise SignatureError(SignatureFailure.too_new)
    expected = sign(secret, delivery_id, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures.split()):
        raise SignatureError(SignatureFailure.mismatch)
