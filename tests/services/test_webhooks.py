"""One webhook attempt: signed, sent through the outbound guard, and classified for the retrier."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from services.core import signing
from services.core.outbound import OutboundPolicy
from services.core.webhooks import Outcome, deliver, send_webhook
from tests.platform_servers import free_port

LOOPBACK = OutboundPolicy.of(deadline_s=5.0, allow_http=True, allow_networks=["127.0.0.1/32"])


class _Hook(BaseHTTPRequestHandler):
    answers: ClassVar[list[int]] = []
    received: ClassVar[list[tuple[bytes, dict[str, str]]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((body, dict(self.headers.items())))
        self.send_response(type(self).answers.pop(0))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def hook() -> Iterator[tuple[str, type[_Hook]]]:
    handler = type("Hook", (_Hook,), {"answers": [], "received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", handler
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.delivered),
        (204, Outcome.delivered),
        (500, Outcome.retry),
        (429, Outcome.retry),
        (408, Outcome.retry),
        (400, Outcome.give_up),
        (410, Outcome.give_up),
        (302, Outcome.give_up),
    ],
)
def test_each_answer_is_classified(hook: tuple[str, type[_Hook]], status: int, outcome: Outcome) -> None:
    url, handler = hook
    handler.answers.append(status)
    secret = signing.new_secret()
    assert send_webhook(url, {"a": 1}, secret=secret, delivery_id="msg_1", policy=LOOPBACK) is outcome
    body, headers = handler.received[0]
    signing.verify(body, headers, secret)
    assert (json.loads(body), headers["webhook-id"], headers["Content-Type"]) == (
        {"a": 1},
        "msg_1",
        "application/json",
    )


def test_a_refused_destination_is_given_up_and_never_contacted(hook: tuple[str, type[_Hook]]) -> None:
    url, handler = hook
    strict = OutboundPolicy.of(deadline_s=5.0, allow_http=True, allow_networks=[])
    assert send_webhook(url, {}, secret="s", delivery_id="msg_2", policy=strict) is Outcome.give_up
    assert handler.received == []


def test_nobody_listening_is_worth_a_retry() -> None:
    url = f"http://127.0.0.1:{free_port()}/nothing"
    assert send_webhook(url, {}, secret="s", delivery_id="msg_3", policy=LOOPBACK) is Outcome.retry


def test_deliver_retries_with_one_delivery_id(
    hook: tuple[str, type[_Hook]], caplog: pytest.LogCaptureFixture
) -> None:
    url, handler = hook
    handler.answers.extend([503, 503, 204])
    outcome = deliver(
        url + "?token=t0ps3cret",
        {},
        secret="s",
        delivery_id="msg_4",
        policy=LOOPBACK,
        attempts=3,
        backoff_s=0.01,
    )
    assert (outcome.outcome, outcome.detail) == (Outcome.delivered, "HTTP 204")
    assert [headers["webhook-id"] for _, headers in handler.received] == ["msg_4"] * 3
    assert "t0ps3cret" not in caplog.text and "token=***" in caplog.text
