"""Typed dependencies: settings, a database session, storage, the queue and the caller's API key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from celery import Celery
from fastapi import Depends, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.core import search, served
from services.core.apikeys import pepper
from services.core.config import Settings
from services.core.models import ApiKey
from services.core.security import hash_api_key
from services.core.storage import ObjectStorage
from services.core.versions import ModelVersion, ModelVersionError


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


def end_read(session: Session) -> None:
    """Close the read-only transaction that authentication began, so the route owns the next one
    and no connection is held while the route waits (a streaming upload, the broker).

    Commit rather than roll back: objects already loaded (the caller's key) stay valid."""
    if session.in_transaction():
        session.commit()


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


def search_params(
    label: Annotated[
        list[str],
        Query(min_length=1, max_length=20, description="a label; repeat for several (see `match`)"),
    ],
    min_score: Annotated[float, Query(ge=0, le=1)] = 0.0,
    model_version: Annotated[str | None, Query(max_length=200)] = None,
    cursor: Annotated[str | None, Query(max_length=200, description="the last `next_cursor`")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    model: Annotated[
        str | None, Query(max_length=401, description="only this model: NAME or NAME:VERSION")
    ] = None,
    sort: Annotated[search.Sort, Query(description="videos: by the best window (peak) or the mean")] = "peak",
    match: Annotated[search.Match, Query(description="several labels: any of them, or all")] = "any",
    start_s: Annotated[float | None, Query(ge=0, description="moments overlapping [start_s, end_s)")] = None,
    end_s: Annotated[float | None, Query(gt=0)] = None,
) -> search.PageRequest:
    if any(not 1 <= len(name) <= 200 for name in label):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "a label is 1 to 200 characters")
    if start_s is not None and end_s is not None and end_s <= start_s:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "end_s must come after start_s")
    try:
        after = search.Cursor.decode(cursor) if cursor is not None else None
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid cursor") from exc
    name, version = _model_filter(model)
    if version is not None and model_version not in (None, version):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "model and model_version disagree")
    return search.PageRequest(
        label,
        min_score,
        version or model_version,
        after,
        limit,
        sort=sort,
        match=match,
        start_ms=None if start_s is None else round(start_s * 1000),
        end_ms=None if end_s is None else round(end_s * 1000),
        model_name=name,
    )


def _model_filter(model: str | None) -> tuple[str | None, str | None]:
    """``NAME`` or ``NAME:VERSION`` -> (name, version or None)."""
    if model is None or ":" not in model:
        return model, None
    try:
        wanted = ModelVersion.parse(model)
    except ModelVersionError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    return wanted.name, wanted.version


SearchDep = Annotated[search.PageRequest, Depends(search_params)]


def resolve_model(session: Session, settings: Settings, requested: str | None) -> ModelVersion:
    """The served model version a submission is keyed by; 422 naming the served ones otherwise."""
    try:
        return served.resolve(session, settings, requested)
    except (served.ModelNotServedError, ModelVersionError) as exc:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", "model"), "msg": str(exc), "input": requested}]
        ) from exc
