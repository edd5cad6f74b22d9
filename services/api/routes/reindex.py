"""Reindex: submit indexed videos again under another served model version, as a backfill of kind
``reindex`` (a worker lists the videos; follow and cancel it under /v1/backfills)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from fastapi.exceptions import RequestValidationError

from services.api.deps import ProducerDep, SessionDep, SettingsDep, end_read, resolve_model
from services.api.guard import BackfillDep
from services.api.routes.backfills import backfill_out
from services.api.schemas import BackfillOut, ReindexRequest
from services.core.indexing.options import IndexOptions
from services.core.queue import enqueue_backfill
from services.core.reindex import ReindexFilterError, ReindexFilters, create_reindex

router = APIRouter(prefix="/v1/reindex", tags=["models"])


@router.post("", status_code=status.HTTP_202_ACCEPTED)
def start_reindex(
    body: ReindexRequest,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    producer: ProducerDep,
    caller: BackfillDep,
) -> BackfillOut:
    """Create one job per matching video for `model`, paced by the queue cap and resumable like a
    backfill; its counts are at `GET /v1/backfills/{id}`. Old labels stay until the old version is
    retired. Only the caller's tenant's videos are taken (backfill scope)."""
    try:
        filters = ReindexFilters.parse([f"{k}={v}" for k, v in body.where.items()])
    except ReindexFilterError as exc:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", "where"), "msg": str(exc), "input": body.where}]
        ) from exc
    model = resolve_model(session, settings, body.model)
    options = IndexOptions.model_validate(body.model_dump(include=set(IndexOptions.model_fields)))
    end_read(session)
    with session.begin():
        row = create_reindex(
            session,
            filters=filters,
            model=model,
            options=options.to_job_options(),
            tenant_id=caller.tenant_id,
        )
        out = backfill_out(row, ({}, []))
    enqueue_backfill(producer, str(row.id))  # after the commit: the worker finds the row
    response.headers["Location"] = f"/v1/backfills/{row.id}"
    return out
