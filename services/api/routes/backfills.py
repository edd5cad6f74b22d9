"""Bulk S3 backfills: start one (a worker lists the prefix), follow its counts, cancel it."""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict

from fastapi import APIRouter, HTTPException, Response, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.api.deps import ProducerDep, SessionDep, SettingsDep, end_read, resolve_model
from services.api.guard import BackfillDep, Principal, check_allowed
from services.api.schemas import (
    NOT_FOUND,
    BackfillCountsOut,
    BackfillOut,
    BackfillRequest,
    ModelRef,
    ObjectFailureOut,
)
from services.core import backfills
from services.core.indexing.errors import reason_for
from services.core.indexing.options import IndexOptions
from services.core.models import Backfill
from services.core.queue import enqueue_backfill
from services.core.tenancy import get_owned

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/backfills", tags=["backfills"])


def backfill_out(
    row: Backfill, failures: tuple[dict[str, int], list[backfills.ObjectFailure]]
) -> BackfillOut:
    by_reason, failed = failures
    return BackfillOut(
        id=row.id,
        source_uri=row.source_uri,
        status=row.status,
        reason=row.reason,
        detail=row.detail,
        model=ModelRef(name=row.model_name, version=row.model_version),
        filters=row.filters,
        options=row.options,
        counts=BackfillCountsOut(**asdict(backfills.counts_of(row))),
        cursor_key=row.cursor_key,
        failures_by_reason=by_reason,
        failures=[ObjectFailureOut(**asdict(f)) for f in failed],
        created_at=row.created_at,
        listed_at=row.listed_at,
        finished_at=row.finished_at,
        output_uri=row.output_uri,
        exported_at=row.exported_at,
    )


@router.post("", status_code=status.HTTP_202_ACCEPTED)
def create_backfill(
    body: BackfillRequest,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    producer: ProducerDep,
    caller: BackfillDep,
) -> BackfillOut:
    """Index every object under an S3 prefix; a worker lists it, one idempotent job per object, and
    writes the results to `output_uri` (if given) once every job has finished."""
    filters = backfills.BackfillFilters(
        extensions=None
        if body.all_extensions
        else tuple(e.lower().lstrip(".") for e in body.extensions)
        if body.extensions
        else backfills.VIDEO_EXTENSIONS,
        min_size=body.min_size,
        max_size=body.max_size,
        modified_since=body.modified_since,
    )
    options = IndexOptions.model_validate(body.model_dump(include=set(IndexOptions.model_fields)))
    model = resolve_model(session, settings, body.model)
    end_read(session)
    with session.begin():
        check_allowed(session, settings, caller, body.source_uri, body.output_uri)
        row = backfills.create_backfill(
            session,
            settings,
            tenant_id=caller.tenant_id,
            source_uri=body.source_uri,
            filters=filters,
            options=options.to_job_options(),
            output_uri=body.output_uri,
            model=model,
        )
        out = backfill_out(row, ({}, []))  # nothing listed yet
    # After the commit: the worker that picks the id up finds the row. With the broker down the
    # backfill is still accepted: the reaper sends it once it has waited in `listing`.
    try:
        enqueue_backfill(producer, str(row.id))
    except Exception as exc:
        if not reason_for(exc).retryable:
            raise
        log.error("backfill %s left for the reaper: %s", row.id, exc)
    response.headers["Location"] = f"/v1/backfills/{row.id}"
    return out


def _get(session: Session, backfill_id: uuid.UUID, caller: Principal) -> Backfill:
    row = get_owned(session, Backfill, backfill_id, caller.sees, with_for_update=True)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such backfill")
    return row


@router.get("/{backfill_id}", responses=NOT_FOUND)
def get_backfill(backfill_id: uuid.UUID, session: SessionDep, caller: BackfillDep) -> BackfillOut:
    """Counts (listed, skipped, queued, succeeded, failed), the cursor and the failed objects."""
    end_read(session)
    with session.begin():
        owner = session.scalar(select(Backfill.tenant_id).where(Backfill.id == backfill_id))
        if owner is None or caller.sees not in (None, owner):
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such backfill")
        # The counting reads come first: the row lock is held only to store what they found.
        finished = backfills.finished_jobs(session, backfill_id)
        failures = backfills.failures(session, backfill_id)
        row = _get(session, backfill_id, caller)
        backfills.refresh(session, row, finished)
        return backfill_out(row, failures)


@router.post("/{backfill_id}/cancel", responses=NOT_FOUND)
def cancel_backfill(backfill_id: uuid.UUID, session: SessionDep, caller: BackfillDep) -> BackfillOut:
    """Stop listing and fail the jobs no worker has started (reason ``cancelled``)."""
    end_read(session)
    with session.begin():
        row = _get(session, backfill_id, caller)
        backfills.cancel(session, row)
        return backfill_out(row, backfills.failures(session, backfill_id))
