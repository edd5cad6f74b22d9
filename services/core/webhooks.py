"""Webhook delivery: one signed POST through the outbound guard, and what to do next.

``send_webhook`` makes one attempt and says whether the delivery is done, worth retrying later, or
hopeless; whoever owns the retries (an outbox, or ``deliver`` below) decides when to try again. The
delivery id stays the same on every attempt so that receivers can drop duplicates.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.core.config import Settings
from services.core.models import Job, Tenant
from services.core.outbound import (
    DeadlineExceededError,
    OutboundPolicy,
    Refusal,
    Resolver,
    TransportError,
    UnsafeDestinationError,
    check_destination,
    post,
    redact_url,
    system_resolver,
)
from services.core.signing import signed_headers

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    delivered = "delivered"  # a 2xx answer
    retry = "retry"  # no answer, a deadline, 408, 429 or 5xx: try again later
    give_up = "give_up"  # a refused destination, or any other answer: trying again changes nothing


def policy_of(settings: Settings) -> OutboundPolicy:
    return OutboundPolicy.of(
        deadline_s=settings.webhook_deadline_s,
        allow_http=settings.webhook_allow_http,
        allow_networks=settings.webhook_allow_networks,
    )


def secret_for(session: Session, job_id: uuid.UUID, settings: Settings) -> str | None:
    """The secret that signs a job's webhooks: its tenant's own, else the deployment's."""
    own = session.scalar(
        select(Tenant.webhook_secret).join(Job, Job.tenant_id == Tenant.id).where(Job.id == job_id)
    )
    if own:
        return own
    return settings.webhook_secret.get_secret_value() if settings.webhook_secret else None


def precheck(url: str, policy: OutboundPolicy) -> str | None:
    """Why ``url`` will be refused, judged without a DNS lookup (scheme, an address written in the
    URL), or None. Submission answers 422 with it; delivery checks again after resolving."""

    def literal(host: str, port: int) -> list[str]:
        ipaddress.ip_address(host)  # a name raises ValueError: unknown until delivery
        return [host]

    try:
        check_destination(url, policy, literal)
    except UnsafeDestinationError as exc:
        return None if exc.reason is Refusal.unresolvable else str(exc)
    return None


def encode_payload(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class Attempt:
    outcome: Outcome
    detail: str  # what happened, for the delivery's record (no URL: it may hold credentials)


def attempt_webhook(
    url: str,
    payload: Mapping[str, Any],
    *,
    secret: str,
    delivery_id: str,
    policy: OutboundPolicy,
    resolve: Resolver = system_resolver,
    now: float | None = None,
) -> Attempt:
    """POST ``payload`` as JSON to ``url``, signed with ``secret``: one attempt, and what came of it."""
    body = encode_payload(payload)
    headers = {"Content-Type": "application/json", **signed_headers(secret, delivery_id, body, now=now)}
    try:
        answer = post(url, body, headers, policy, resolve=resolve)
    except UnsafeDestinationError as exc:
        log.warning("webhook %s not sent: %s", delivery_id, exc)
        return Attempt(Outcome.give_up, f"refused: {exc.reason}")
    except (DeadlineExceededError, TransportError) as exc:
        log.warning("webhook %s to %s: %s", delivery_id, redact_url(url), exc)
        return Attempt(Outcome.retry, type(exc).__name__)
    detail = f"HTTP {answer.status}"
    if 200 <= answer.status < 300:
        return Attempt(Outcome.delivered, detail)
    log.warning("webhook %s to %s: %s", delivery_id, redact_url(url), detail)
    if answer.status in (408, 429) or answer.status >= 500:
        return Attempt(Outcome.retry, detail)
    return Attempt(Outcome.give_up, detail)


def send_webhook(
    url: str,
    payload: Mapping[str, Any],
    *,
    secret: str,
    delivery_id: str,
    policy: OutboundPolicy,
    resolve: Resolver = system_resolver,
    now: float | None = None,
) -> Outcome:
    """One signed attempt: delivered, worth a retry later, or hopeless."""
    return attempt_webhook(
        url, payload, secret=secret, delivery_id=delivery_id, policy=policy, resolve=resolve, now=now
    ).outcome


def deliver(
    url: str,
    payload: Mapping[str, Any],
    *,
    secret: str,
    delivery_id: str,
    policy: OutboundPolicy,
    attempts: int,
    backoff_s: float = 0.5,
    resolve: Resolver = system_resolver,
) -> Attempt:
    """Up to ``attempts`` tries with jittered exponential backoff between them; the last one's result."""
    result = Attempt(Outcome.retry, "not tried")
    for attempt in range(1, attempts + 1):
        result = attempt_webhook(
            url, payload, secret=secret, delivery_id=delivery_id, policy=policy, resolve=resolve
        )
        if result.outcome is not Outcome.retry:
            return result
        if attempt < attempts:
            time.sleep(backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))
    return result
