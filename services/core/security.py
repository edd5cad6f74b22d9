"""API keys: generated at random, stored as keyed hashes, never in clear.

Webhook signatures live in ``services.core.signing``."""

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
