"""API keys (stored as keyed hashes, never in clear) and webhook signatures."""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "tsm_"


def generate_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str, pepper: str) -> str:
    # A keyed hash: a stolen table alone cannot be checked against guesses.
    return hmac.new(pepper.encode(), key.encode(), hashlib.sha256).hexdigest()


def sign_body(body: bytes, secret: str) -> str:
    """The ``X-Tsmindex-Signature`` header value of a webhook body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, secret: str, signature: str) -> bool:
    return hmac.compare_digest(sign_body(body, secret), signature)
