from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.core import signing
from services.core.config import Settings
from services.core.indexing import jobs, outbox
from services.core.indexing.reaper import Scope, reap_once
from services.core.models import WebhookDelivery
from tests.services.indexing.conftest import MakeJob


class Receiver:
    """A webhook endpoint that answers ``statuses`` in turn (then 204) and keeps what it got."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                signing.verify(body, dict(self.headers.items()), "s3cret")
                receiver.bodies.append(json.loads(body))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    thread = threading.Thread(target=r.server.serve_forever, daemon=True)
    thread.start()
    yield r
    r.server.shutdown()


@pytest.fixture()
def hook_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "webhook_secret": SecretStr("s3cret"),
            "webhook_attempts": 1,
            "webhook_retry_base_s": 1.0,
            # The receiver is on loopback over plain http: allowed in this test only.
            "webhook_allow_http": True,
            "webhook_allow_networks": ["127.0.0.1/32"],
        }
    )


def _succeed(sessions: sessionmaker[Session], settings: Settings, job_id: uuid.UUID) -> None:
    with sessions.begin() as session:
        jobs.claim(session=session, job_id=job_id, owner="w", settings=settings)
    with sessions.begin() as session:
        row = jobs.held(session=session, job_id=job_id, owner="w")
        assert row is not None
        jobs.succeed(session=session, job=row, labels=[{"label": "run", "score": 0.9}])


def _reap(sessions: sessionmaker[Session], settings: Settings, job_id: uuid.UUID) -> None:
    reap_once(
        sessions, settings, send_job=lambda _: None, send_backfill=lambda _: None, scope=Scope([job_id])
    )


def test_a_webhook_committed_before_the_worker_died_is_delivered_by_the_reaper_once(
    sessions: sessionmaker[Session], hook_settings: Settings, make_job: MakeJob, receiver: Receiver
) -> None:
    """The outcome is committed and the worker dies before posting: the reaper delivers it."""
    job_id = make_job(options={"webhook_url": receiver.url})
    _succeed(sessions, hook_settings, job_id)
    assert receiver.bodies == []  # the worker died here
    _reap(sessions, hook_settings, job_id)
    _reap(sessions, hook_settings, job_id)
    assert [(b["job_id"], b["status"], b["labels"]) for b in receiver.bodies] == [
        (str(job_id), "succeeded", [{"label": "run", "score": 0.9}])
    ]


def test_a_failing_receiver_is_retried_with_backoff_until_it_answers(
    sessions: sessionmaker[Session], hook_settings: Settings, make_job: MakeJob, receiver: Receiver
) -> None:
    receiver.statuses = [503, 503]
    job_id = make_job(options={"webhook_url": receiver.url})
    _succeed(sessions, hook_settings, job_id)
    assert outbox.deliver_due(sessions, hook_settings, job_ids=[job_id]) == 0
    with sessions() as session:
        row = session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)).one()
        assert (row.attempts, row.last_error, row.delivered_at) == (1, "HTTP 503", None)
        assert row.next_attempt_at is not None
        wait = (jobs.as_utc(row.next_attempt_at) - datetime.now(UTC)).total_seconds()
    assert 0 < wait <= 1.0
    assert outbox.deliver_due(sessions, hook_settings, job_ids=[job_id]) == 0  # not due yet
    for _ in range(2):
        with sessions.begin() as session:
            row = session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)).one()
            row.next_attempt_at = datetime.now(UTC) - timedelta(seconds=1)
        outbox.deliver_due(sessions, hook_settings, job_ids=[job_id])
    assert len(receiver.bodies) == 3
    with sessions() as session:
        row = session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)).one()
        assert (row.attempts, row.delivered_at is not None) == (3, True)


def test_a_receiver_refusing_the_webhook_is_given_up(
    sessions: sessionmaker[Session], hook_settings: Settings, make_job: MakeJob, receiver: Receiver
) -> None:
    receiver.statuses = [410]
    job_id = make_job(options={"webhook_url": receiver.url})
    _succeed(sessions, hook_settings, job_id)
    outbox.deliver_due(sessions, hook_settings, job_ids=[job_id])
    _reap(sessions, hook_settings, job_id)
    assert len(receiver.bodies) == 1
    with sessions() as session:
        row = session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)).one()
        assert (row.last_error, row.gave_up_at is not None) == ("HTTP 410", True)
