"""Typed dependencies: settings, a database session, storage, the queue and search parameters.

The caller (``Principal``) comes from ``services.api.guard``, which authenticates before any body is read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from celery import Celery
from fastapi import Depends, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session

from services.core import search, served
from services.core.config import Settings
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


def _query_error(name: str, message: str, value: object) -> RequestValidationError:
    """A 422 shaped like FastAPI's own validation errors, as the OpenAPI description says."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", name), "msg": message, "input": value}]
    )


def invalid_cursor(cursor: str | None) -> RequestValidationError:
    return _query_error("cursor", "invalid cursor", cursor)


# Row numbers in paths stay inside their columns (BIGINT ids, INTEGER window numbers): past them
# the database would fail (500), so they are the caller's mistake (422).
MomentIdPath = Annotated[int, Path(ge=1, le=2**63 - 1, description="a moment's id")]
WindowIndexPath = Annotated[int, Path(ge=0, le=2**31 - 1, description="the window's number in its video")]
MAX_TIME_S = 10 * 365 * 86400.0  # a bound on positions in a video: milliseconds fit a BIGINT


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
    start_s: Annotated[
        float | None, Query(ge=0, le=MAX_TIME_S, description="moments overlapping [start_s, end_s)")
    ] = None,
    end_s: Annotated[float | None, Query(gt=0, le=MAX_TIME_S)] = None,
) -> search.PageRequest:
    if any(not 1 <= len(name) <= 200 for name in label):
        raise _query_error("label", "a label is 1 to 200 characters", label)
    if start_s is not None and end_s is not None and end_s <= start_s:
        raise _query_error("end_s", "end_s must come after start_s", end_s)
    try:
        after = search.Cursor.decode(cursor) if cursor is not None else None
    except ValueError as exc:
        raise invalid_cursor(cursor) from exc
    name, version = _model_filter(model)
    if version is not None and model_version not in (None, version):
        raise _query_error("model", "model and model_version disagree", model)
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
