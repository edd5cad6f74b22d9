"""Typed dependencies: settings, a database session, storage, the queue and the caller's API key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from celery import Celery
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.core import search
from services.core.apikeys import pepper
from services.core.config import Settings
from services.core.models import ApiKey
from services.core.security import hash_api_key
from services.core.storage import ObjectStorage


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def get_storage(request: Request) -> ObjectStorage:
    storage: ObjectStorage = request.app.state.storage
    return storage


def get_producer(request: Request) -> Celery:
    producer: Celery = request.app.state.producer
    return producer


def get_source_s3(request: Request) -> Any:
    """The S3 client that reads videos submitted by ``source_uri`` (the workers' credentials)."""
    return request.app.state.source_s3


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
StorageDep = Annotated[ObjectStorage, Depends(get_storage)]
ProducerDep = Annotated[Celery, Depends(get_producer)]
SourceS3Dep = Annotated[Any, Depends(get_source_s3)]

_bearer = HTTPBearer(auto_error=False)


def get_api_key(
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing API key", headers={"WWW-Authenticate": "Bearer"}
        )
    key = session.scalar(
        select(ApiKey).where(
            ApiKey.key_hash == hash_api_key(credentials.credentials, pepper(settings)),
            ApiKey.revoked_at.is_(None),
        )
    )
    if key is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "invalid API key", headers={"WWW-Authenticate": "Bearer"}
        )
    return key


ApiKeyDep = Annotated[ApiKey, Depends(get_api_key)]


def parse_cursor(cursor: str | None) -> search.Cursor | None:
    """A search page's ``cursor`` query parameter, or 422 when it is not one we issued."""
    if cursor is None:
        return None
    try:
        return search.Cursor.decode(cursor)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid cursor") from exc
