"""HTTP requests to addresses a caller chose (webhooks), made safe against request forgery.

- https only, unless the deployment allows http;
- the host is resolved once and refused when any address it resolves to is loopback, private,
  link-local, multicast or otherwise not global, unless an allow-listed network contains it;
- the connection goes to the address that was checked (a second lookup could answer otherwise: DNS
  rebinding), while the Host header, TLS SNI and certificate check keep the URL's host name;
- redirects are never followed;
- one deadline covers the whole exchange: connecting, sending, and reading the response, so a
  receiver that trickles one byte a second is cut off at the deadline, not after every byte.

Name resolution happens before the deadline's clock starts and is bounded by the system resolver.
``redact_url`` is the one way a URL given by a caller reaches a log.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpcore

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]
MAX_RESPONSE_BYTES = 64 * 1024  # what we read of an answer: its status is what matters


class Refusal(StrEnum):
    """Why a destination was refused before any connection was made."""

    bad_url = "bad_url"
    scheme = "scheme"  # not https (or http where allowed)
    unresolvable = "unresolvable"
    address = "address"  # loopback, private, link-local, multicast, ... and not allow-listed


class OutboundError(Exception):
    """An outbound request did not get an answer."""


class UnsafeDestinationError(OutboundError):
    """The URL may not be called; never retried."""

    def __init__(self, reason: Refusal, url: str, detail: str = "") -> None:
        super().__init__(f"{redact_url(url)} refused ({reason}){': ' + detail if detail else ''}")
        self.reason = reason


class DeadlineExceededError(OutboundError):
    """The exchange did not finish within its deadline."""


class TransportError(OutboundError):
    """Connecting, TLS, or the HTTP exchange failed."""


def redact_url(url: str) -> str:
    """``url`` without credentials or query values: safe to log."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable URL>"
    netloc = ("***@" if "@" in parts.netloc else "") + (f"[{host}]" if ":" in host else host) + port
    query = "&".join(f"{pair.split('=', 1)[0]}=***" for pair in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


@dataclass(frozen=True)
class OutboundPolicy:
    """Where outbound requests may go, and how long one may take in all."""

    deadline_s: float = 10.0
    allow_http: bool = False
    allow_networks: tuple[IpNetwork, ...] = ()
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)  # None: system trust

    @classmethod
    def of(cls, *, deadline_s: float, allow_http: bool, allow_networks: Iterable[str]) -> OutboundPolicy:
        return cls(
            deadline_s, allow_http, tuple(ipaddress.ip_network(n, strict=False) for n in allow_networks)
        )

    def permits(self, address: IpAddress) -> bool:
        if any(address in network for network in self.allow_networks):
            return True
        return address.is_global and not address.is_multicast


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class Destination:
    """A checked URL: the address to connect to, and the name the server is known by."""

    scheme: str
    host: str
    port: int
    address: str
    target: bytes  # path and query


def _address(text: str) -> IpAddress:
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def check_destination(url: str, policy: OutboundPolicy, resolve: Resolver = system_resolver) -> Destination:
    """Resolve ``url``'s host and check every address; raises ``UnsafeDestinationError``."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeDestinationError(Refusal.bad_url, url) from exc
    if parts.scheme not in ("https", "http") or (parts.scheme == "http" and not policy.allow_http):
        raise UnsafeDestinationError(Refusal.scheme, url, "https is required")
    host = parts.hostname
    if not host:
        raise UnsafeDestinationError(Refusal.bad_url, url)
    try:
        addresses = [_address(a) for a in resolve(host, port)]
    except (OSError, UnicodeError, ValueError) as exc:
        raise UnsafeDestinationError(Refusal.unresolvable, url) from exc
    if not addresses:
        raise UnsafeDestinationError(Refusal.unresolvable, url)
    refused = [a for a in addresses if not policy.permits(a)]
    if refused:
        raise UnsafeDestinationError(Refusal.address, url, f"{host} resolves to {refused[0]}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Destination(parts.scheme, host, port, str(addresses[0]), target.encode())


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def clamp(self, timeout: float | None) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("deadline exceeded")
        return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A stream whose every operation ends by the deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self.inner, self.deadline = inner, deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, self.deadline.clamp(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, self.deadline.clamp(timeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        tls = self.inner.start_tls(ssl_context, server_hostname, self.deadline.clamp(timeout))
        return _DeadlineStream(tls, self.deadline)

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects to the checked address whatever host name the URL has."""

    def __init__(self, address: str, deadline: _Deadline) -> None:
        self.address, self.deadline, self.inner = address, deadline, httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self.inner.connect_tcp(
            self.address, port, self.deadline.clamp(timeout), local_address, socket_options
        )
        return _DeadlineStream(stream, self.deadline)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes  # at most MAX_RESPONSE_BYTES


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    policy: OutboundPolicy,
    *,
    resolve: Resolver = system_resolver,
) -> Answer:
    """POST ``body`` to ``url`` under ``policy``; a redirect is an answer like any other (3xx)."""
    destination = check_destination(url, policy, resolve)
    deadline = _Deadline(policy.deadline_s)
    default_port = 443 if destination.scheme == "https" else 80
    host = f"[{destination.host}]" if ":" in destination.host else destination.host
    host_header = host if destination.port == default_port else f"{host}:{destination.port}"
    request_headers = [("Host", host_header), *headers.items(), ("Content-Length", str(len(body)))]
    pool = httpcore.ConnectionPool(
        ssl_context=policy.ssl_context or ssl.create_default_context(),
        network_backend=_PinnedBackend(destination.address, deadline),
        max_connections=1,
        retries=0,
    )
    target = httpcore.URL(
        scheme=destination.scheme.encode(),
        host=destination.host.encode(),
        port=destination.port,
        target=destination.target,
    )
    timeouts = {name: policy.deadline_s for name in ("connect", "read", "write", "pool")}
    try:
        with (
            pool,
            pool.stream(
                b"POST", target, headers=request_headers, content=body, extensions={"timeout": timeouts}
            ) as response,
        ):
            received = b""
            for chunk in response.iter_stream():
                received += chunk
                if len(received) >= MAX_RESPONSE_BYTES:
                    break
            return Answer(response.status, received[:MAX_RESPONSE_BYTES])
    except httpcore.TimeoutException as exc:
        raise DeadlineExceededError(f"{redact_url(url)}: no answer within {policy.deadline_s} s") from exc
    except (httpcore.NetworkError, httpcore.ProtocolError, OSError, ssl.SSLError) as exc:
        raise TransportError(f"{redact_url(url)}: {type(exc).__name__}") from exc
