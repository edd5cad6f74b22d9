"""The webhook outbox: a job's outcome and its notification are written in one transaction, then
delivered after the commit by the worker, and retried by the reaper with backoff for as long as
``webhook_max_rounds`` allows, beyond the job's own life.

Exactly once per outcome per job: the row is unique on (job, outcome), and a delivery holds its
row's lock while it posts, so two deliverers never send the same row.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.core.config import Settings
from services.core.db import dialect_insert
from services.core.models import Job, WebhookDelivery
from services.core.security import sign_body

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Tsmindex-Signature"


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
            delivered += _attempt(row, settings)
    return delivered


def _attempt(row: WebhookDelivery, settings: Settings) -> int:
    row.attempts += 1
    if settings.webhook_secret is None:
        row.gave_up_at = _now()
        row.last_error = "TSMINDEX_WEBHOOK_SECRET is not set"
        log.warning("webhook %s not sent: TSMINDEX_WEBHOOK_SECRET is not set", row.url)
        return 0
    error, refused = post_webhook(
        row.url,
        row.payload,
        secret=settings.webhook_secret.get_secret_value(),
        attempts=settings.webhook_attempts,
        timeout_s=settings.io_timeout_s,
    )
    if error is None:
        row.delivered_at = _now()
        return 1
    row.last_error = error[:2000]
    if refused or row.attempts >= settings.webhook_max_rounds:
        row.gave_up_at = _now()
    else:
        delay = min(settings.webhook_retry_cap_s, settings.webhook_retry_base_s * 2 ** (row.attempts - 1))
        row.next_attempt_at = _now() + timedelta(seconds=delay)
    return 0


def post_webhook(
    url: str, payload: dict[str, Any], *, secret: str, attempts: int, timeout_s: float, backoff_s: float = 0.5
) -> tuple[str | None, bool]:
    """POST the HMAC-signed JSON body; retries transport errors, 429 and 5xx with backoff.
    Returns (None, False) once delivered, else what went wrong last and whether the receiver
    refused it for good (a 4xx other than 429: sending it again cannot help)."""
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign_body(body, secret)}
    error = "not tried"
    for attempt in range(1, attempts + 1):
        try:
            response = httpx.post(url, content=body, headers=headers, timeout=timeout_s)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            if response.is_success:
                return None, False
            error = f"HTTP {response.status_code}"
            if response.status_code < 500 and response.status_code != 429:
                return error, True
        log.warning("webhook %s attempt %d: %s", url, attempt, error)
        if attempt < attempts:
            time.sleep(backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))
    return error, False
