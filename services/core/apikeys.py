"""Issuing and revoking API keys. The key is shown once; only its keyed hash is stored."""

from __future__ import annotations

from sqlalchemy.orm import Session

from services.core.config import Settings
from services.core.models import ApiKey
from services.core.security import generate_api_key, hash_api_key


def pepper(settings: Settings) -> str:
    return settings.api_keys_pepper.get_secret_value() if settings.api_keys_pepper else ""


def create_api_key(session: Session, settings: Settings, *, name: str) -> tuple[ApiKey, str]:
    """Add a key to the session (the caller commits) and return it with its clear text."""
    key = generate_api_key()
    row = ApiKey(name=name, prefix=key[:12], key_hash=hash_api_key(key, pepper(settings)))
    session.add(row)
    return row, key
