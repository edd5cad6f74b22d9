"""The webhook outbox: a job's outcome and its notification are written in one transaction, then
delivered after the commit by the worker, and retried by the reaper with backoff for as long as
``webhook_max_rounds`` allows, beyond the job's own life.

Exactly once per outcome per job: the row is unique on (job, outcome), and a delivery holds its
row's lock while it posts, so two deliverers never send the same row.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.core import webhooks
from services.core.config import Settings
from services.core.db import dialect_insert
from services.core.models import Job, WebhookDelivery

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def payload_of(job: Job, labels: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "job_id": str(job.id),
        "video_id": str(job.video_id),
        "status": str(job.status),
        "reason": job.reason,
        "model": {"name": job.model_name, "version": job.model_version},
        "labels": [{"label": r["label"], "score": r["score"]} for r in labels],
    }


def record(*, session: Session, job: Job, labels: Sequence[dict[str, Any]]) -> None:
    """Queue the job's webhook for its current outcome, if it asked for one."""
    url = (job.options or {}).get("webhook_url")
    if not url:
        return
    session.execute(
        dialect_insert(session, WebhookDelivery)
        .values(
            job_id=job.id,
            outcome=str(job.status),
            url=str(url),
            payload=payload_of(job, labels),
            attempts=0,
            next_attempt_at=_now(),
            created_at=_now(),
        )
        .on_conflict_do_nothing(index_elements=["job_id", "outcome"])
    )


def deliver_due(
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    job_ids: Sequence[uuid.UUID] | None = None,
    limit: int = 50,
) -> int:
    """Deliver due webhooks (only those of ``job_ids`` when given); returns how many succeeded."""
    delivered = 0
    for _ in range(limit):
        with sessions.begin() as session:
            query = (
                select(WebhookDelivery)
                .where(
                    WebhookDelivery.delivered_at.is_(None),
                    WebhookDelivery.gave_up_at.is_(None),
                    WebhookDelivery.next_attempt_at <= _now(),
                )
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if job_ids is not None:
                query = query.where(WebhookDelivery.job_id.in_(job_ids))
            row = session.scalar(query)
            if row is None:
                return delivered
            delivered += _attempt(session, row, settings)
    return delivered


def _attempt(session: Session, row: WebhookDelivery, settings: Settings) -> int:
    row.attempts += 1
    secret = webhooks.secret_for(session, row.job_id, settings)
    if secret is None:
        row.gave_up_at = _now()
        row.last_error = "TSMINDEX_WEBHOOK_SECRET is not set"
        log.warning("webhook of job %s not sent: TSMINDEX_WEBHOOK_SECRET is not set", row.job_id)
        return 0
    result = webhooks.deliver(
        row.url,
        row.payload,
        secret=secret,
        # The same id on every round: receivers drop a delivery they have already handled.
        delivery_id=f"msg_{row.job_id.hex}_{row.outcome}",
        policy=webhooks.policy_of(settings),
        attempts=settings.webhook_attempts,
    )
    if result.outcome is webhooks.Outcome.delivered:
        row.delivered_at = _now()
        return 1
    row.last_error = result.detail
    if result.outcome is webhooks.Outcome.give_up or row.attempts >= settings.webhook_max_rounds:
        row.gave_up_at = _now()
    else:
        delay = min(settings.webhook_retry_cap_s, settings.webhook_retry_base_s * 2 ** (row.attempts - 1))
        row.next_attempt_at = _now() + timedelta(seconds=delay)
    return 0
