"""Outbound requests to caller-chosen URLs: refused destinations, the pinned address, TLS with the
URL's name, no redirects, and one deadline for the whole exchange."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
import trustme

from services.core import outbound
from services.core.outbound import (
    DeadlineExceededError,
    OutboundPolicy,
    Refusal,
    UnsafeDestinationError,
    check_destination,
    post,
    redact_url,
)

LOOPBACK = OutboundPolicy.of(deadline_s=5.0, allow_http=True, allow_networks=["127.0.0.1/32"])


class _Receiver(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, str]]] = []
    status: ClassVar[int] = 204
    location: ClassVar[str | None] = None

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append({"path": self.path, **dict(self.headers.items())})
        self.send_response(type(self).status)
        if type(self).location:
            self.send_header("Location", type(self).location or "")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def receiver() -> Iterator[tuple[ThreadingHTTPServer, type[_Receiver]]]:
    handler = type("Receiver", (_Receiver,), {"seen": [], "status": 204, "location": None})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()


def _fixed(*addresses: str) -> Callable[[str, int], list[str]]:
    return lambda host, port: list(addresses)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "169.254.169.254",
        "10.1.2.3",
        "192.168.0.1",
        "172.16.5.5",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",
    ],
)
def test_non_global_addresses_are_refused(address: str) -> None:
    policy = OutboundPolicy.of(deadline_s=1.0, allow_http=True, allow_networks=[])
    with pytest.raises(UnsafeDestinationError) as refused:
        check_destination("https://hooks.example/x", policy, _fixed("93.184.215.14", address))
    assert refused.value.reason is Refusal.address


def test_metadata_and_loopback_urls_are_refused_as_typed() -> None:
    policy = OutboundPolicy.of(deadline_s=1.0, allow_http=True, allow_networks=[])
    for url in ["http://169.254.169.254/latest/meta-data/", "http://localhost:8000/", "http://[::1]/"]:
        with pytest.raises(UnsafeDestinationError) as refused:
            check_destination(url, policy)
        assert refused.value.reason is Refusal.address


def test_https_is_required_unless_http_is_allowed() -> None:
    policy = OutboundPolicy.of(deadline_s=1.0, allow_http=False, allow_networks=[])
    for url in ["http://hooks.example/x", "ftp://hooks.example/x", "file:///etc/passwd", "gopher://x/"]:
        with pytest.raises(UnsafeDestinationError) as refused:
            check_destination(url, policy, _fixed("93.184.215.14"))
        assert refused.value.reason is Refusal.scheme
    assert (
        check_destination("https://hooks.example/x?a=1", policy, _fixed("93.184.215.14")).target == b"/x?a=1"
    )


def test_an_allow_listed_network_may_be_private() -> None:
    policy = OutboundPolicy.of(deadline_s=1.0, allow_http=False, allow_networks=["10.0.0.0/8"])
    assert check_destination("https://hooks.internal/", policy, _fixed("10.9.8.7")).address == "10.9.8.7"
    with pytest.raises(UnsafeDestinationError):
        check_destination("https://hooks.internal/", policy, _fixed("10.9.8.7", "192.168.1.1"))


def test_the_connection_goes_to_the_checked_address_with_the_url_host(
    receiver: tuple[ThreadingHTTPServer, type[_Receiver]],
) -> None:
    """A name the system cannot resolve: the request reaches the receiver only through the pin."""
    server, handler = receiver
    calls: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    answer = post(
        f"http://hooks.invalid:{server.server_port}/in?token=1", b"{}", {}, LOOPBACK, resolve=resolve
    )
    assert (answer.status, calls) == (204, ["hooks.invalid"])
    assert handler.seen[0]["Host"] == f"hooks.invalid:{server.server_port}"
    assert handler.seen[0]["path"] == "/in?token=1"


def test_tls_keeps_the_url_host_for_sni_and_the_certificate() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hooks.test").configure_cert(server_ctx)
    seen: list[str | None] = []
    server_ctx.sni_callback = lambda sock, name, ctx: seen.append(name)
    handler: type[_Receiver] = type(
        "TlsReceiver", (_Receiver,), {"seen": [], "status": 204, "location": None}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = server_ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    policy = OutboundPolicy(deadline_s=5.0, allow_networks=LOOPBACK.allow_networks, ssl_context=client_ctx)
    try:
        url = f"https://hooks.test:{server.server_port}/tls"
        assert post(url, b"{}", {}, policy, resolve=_fixed("127.0.0.1")).status == 204
        # The same address under another name: the certificate does not match it.
        with pytest.raises(outbound.TransportError):
            post(
                f"https://other.test:{server.server_port}/tls", b"{}", {}, policy, resolve=_fixed("127.0.0.1")
            )
    finally:
        server.shutdown()
        server.server_close()
    assert seen[0] == "hooks.test"
    assert handler.seen[0]["Host"] == f"hooks.test:{server.server_port}"


def test_redirects_are_not_followed(receiver: tuple[ThreadingHTTPServer, type[_Receiver]]) -> None:
    server, handler = receiver
    handler.status, handler.location = 307, f"http://127.0.0.1:{server.server_port}/elsewhere"
    answer = post(f"http://127.0.0.1:{server.server_port}/first", b"{}", {}, LOOPBACK)
    assert answer.status == 307
    assert [seen["path"] for seen in handler.seen] == ["/first"]


def _trickling_server(head: bytes, per_byte_s: float) -> tuple[socket.socket, threading.Event]:
    """A receiver that answers ``head`` and then one byte every ``per_byte_s`` seconds."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(head)
            while not stop.wait(per_byte_s):
                try:
                    conn.sendall(b"x")
                except OSError:
                    return

    threading.Thread(target=serve, daemon=True).start()
    return listener, stop


@pytest.mark.parametrize(
    "head",
    [b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", b"HTTP/1.1 200 OK\r\nX-Slow: "],
    ids=["slow-body", "slow-headers"],
)
def test_one_deadline_covers_a_receiver_that_trickles_a_byte_a_second(head: bytes) -> None:
    listener, stop = _trickling_server(head, per_byte_s=0.25)
    policy = OutboundPolicy.of(deadline_s=1.5, allow_http=True, allow_networks=["127.0.0.1/32"])
    started = time.monotonic()
    try:
        with pytest.raises(DeadlineExceededError):
            post(f"http://127.0.0.1:{listener.getsockname()[1]}/slow", b"{}", {}, policy)
    finally:
        stop.set()
        listener.close()
    assert time.monotonic() - started < 1.5 + 1.0  # cut at the deadline, not after every byte


def test_a_receiver_that_never_answers_is_cut_at_the_deadline() -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (backlog) and never reads or answers
    policy = OutboundPolicy.of(deadline_s=0.5, allow_http=True, allow_networks=["127.0.0.1/32"])
    started = time.monotonic()
    with listener, pytest.raises(DeadlineExceededError):
        post(f"http://127.0.0.1:{listener.getsockname()[1]}/", b"{}", {}, policy)
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pa55@hooks.example/x?token=abc&b=2", "https://***@hooks.example/x?token=***&b=***"),
        ("https://hooks.example:8443/x", "https://hooks.example:8443/x"),
        ("http://[::1]:80/a#frag", "http://[::1]:80/a"),
        ("https://hooks.example:99999/", "<unparsable URL>"),
    ],
)
def test_redact_url_drops_credentials_and_query_values(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "pa55" not in shown and "abc" not in shown
