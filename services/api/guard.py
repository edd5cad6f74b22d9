"""The API's front door: who is calling, how much they may send, and how often.

A pure ASGI middleware rather than a dependency: FastAPI parses a JSON body before it runs any
dependency, so a dependency would authenticate only after reading whatever an anonymous caller sent.
Here the key is checked from the headers alone, then the body is counted as it streams (a declared
``Content-Length`` over the limit is refused before a byte is read; a chunked body is cut off as soon
as it passes the limit). Routes get the caller as a typed ``Principal``.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import anyio.to_thread
import sqlalchemy.exc
from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.schemas import ErrorOut
from services.core import allowlist
from services.core.apikeys import is_active, pepper
from services.core.config import Settings
from services.core.indexing.errors import reason_for
from services.core.models import ApiKey, Tenant
from services.core.ratelimit import Decision, RateLimiter
from services.core.security import hash_api_key

log = logging.getLogger(__name__)

FORM_OVERHEAD_BYTES = 1024 * 1024  # multipart boundaries and option fields around an uploaded file
# Routes that take a multipart video (an upload, a query clip): the upload limit, not the JSON one.
UPLOAD_PATHS = frozenset({"/v1/videos", "/v1/moments/similar"})
# Open to anyone: liveness, readiness, and the API's own description.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
METRICS_PATH = "/metrics"
# The database not answering while a key is checked: 503, like the app's handlers answer.
AUTH_OUTAGES = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: which key, of which tenant, and what it may do."""

    key_id: uuid.UUID
    name: str
    tenant_id: uuid.UUID
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        """An admin key sees and manages every tenant's objects."""
        return "admin" in self.scopes

    def allows(self, scope: str) -> bool:
        return self.is_admin or scope in self.scopes

    @property
    def sees(self) -> uuid.UUID | None:
        """The tenant whose objects this caller sees; None: every tenant's (admin)."""
        return None if self.is_admin else self.tenant_id


@dataclass(frozen=True)
class BodyLimit:
    """How many bytes a request may send, and what a caller who sends more is told."""

    max_bytes: int
    message: str


class BodyTooLargeError(HTTPException):
    """The request body passed the limit of its route.

    An HTTPException so that FastAPI's body parsing lets it through as a 413 instead of turning it
    into "There was an error parsing the body"."""

    def __init__(self, limit: BodyLimit) -> None:
        super().__init__(status.HTTP_413_CONTENT_TOO_LARGE, limit.message)
        self.limit = limit


def body_limit(scope: Scope, settings: Settings) -> BodyLimit:
    """A video upload gets the upload limit (plus the form around the file), anything else a JSON one."""
    if scope["method"] == "POST" and scope["path"] in UPLOAD_PATHS and _is_multipart(scope):
        return BodyLimit(
            settings.max_upload_bytes + FORM_OVERHEAD_BYTES,
            f"uploads are limited to {settings.max_upload_bytes} bytes",
        )
    return BodyLimit(
        settings.max_json_bytes, f"request bodies are limited to {settings.max_json_bytes} bytes"
    )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _is_multipart(scope: Scope) -> bool:
    return (_header(scope, b"content-type") or "").lower().startswith("multipart/form-data")


def authenticate(
    sessions: sessionmaker[Session], settings: Settings, authorization: str | None
) -> Principal | None:
    """The key's principal, or None for a missing, unknown, revoked or expired key (a rotated key
    works until its grace period ends)."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    with sessions() as session:
        key = session.scalar(
            select(ApiKey).where(ApiKey.key_hash == hash_api_key(token.strip(), pepper(settings)))
        )
        if key is None or not is_active(key):
            return None
        return Principal(key_id=key.id, name=key.name, tenant_id=key.tenant_id, scopes=frozenset(key.scopes))


async def _send_json(send: Send, code: int, detail: str, headers: dict[str, str] | None = None) -> None:
    await _send_body(send, code, {"detail": detail}, headers)


async def _send_body(
    send: Send, code: int, content: dict[str, str], headers: dict[str, str] | None = None
) -> None:
    body = json.dumps(content).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": code, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class NulInBodyError(HTTPException):
    """A JSON body with an escaped NUL: no database stores it in text, so it is refused up front."""

    def __init__(self) -> None:
        super().__init__(status.HTTP_400_BAD_REQUEST, "NUL characters are not accepted")


def _counting_receive(receive: Receive, limit: BodyLimit, *, json_body: bool) -> Receive:
    received = 0
    tail = b""  # the end of the previous chunk: an escape may straddle two

    async def counted() -> Message:
        nonlocal received, tail
        message = await receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit.max_bytes:
                raise BodyTooLargeError(limit)
            if json_body and b"\\u0000" in tail + chunk:
                raise NulInBodyError()
            tail = chunk[-6:]
        return message

    return counted


class GuardMiddleware:
    """Authenticate, rate-limit and bound the body of every HTTP request before the app sees it."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def _is_public(self, path: str) -> bool:
        if path == METRICS_PATH:
            return not self.settings.metrics_require_key
        return path in PUBLIC_PATHS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(scope, self.settings)
        declared = _header(scope, b"content-length")
        principal: Principal | None = None
        if not self._is_public(scope["path"]):
            state: Any = scope["app"].state
            try:
                principal = await anyio.to_thread.run_sync(
                    authenticate, state.sessions, self.settings, _header(scope, b"authorization")
                )
            except AUTH_OUTAGES as exc:
                # Outside the app's exception handlers: answer as they do for a database away.
                outage = reason_for(exc)
                log.warning("authentication: %s: %s", outage, type(exc).__name__)
                detail = {"detail": f"temporarily unavailable ({outage}); retry", "reason": str(outage)}
                await _send_body(send, 503, detail, {"Retry-After": "10"})
                return
            if principal is None:
                refusal = "missing API key" if _header(scope, b"authorization") is None else "invalid API key"
                await _send_json(send, 401, refusal, {"WWW-Authenticate": "Bearer"})
                return
            scope.setdefault("state", {})["principal"] = principal
        if _has_nul(scope):
            # No text column takes NUL (PostgreSQL refuses it): the caller's mistake, not a 500.
            await _send_json(send, 400, "the URL may not contain NUL characters")
            return
        if declared is not None and declared.isdigit() and int(declared) > limit.max_bytes:
            await _send_json(send, 413, limit.message)
            return
        limiter: RateLimiter | None = getattr(scope["app"].state, "rate_limiter", None)
        if principal is not None and limiter is not None:
            decision = await anyio.to_thread.run_sync(limiter.hit, str(principal.key_id))
            if not decision.allowed:
                await _too_many(send, decision, "rate limit exceeded")
                return
        if principal is not None and limiter is not None and limit.max_bytes > self.settings.max_json_bytes:
            await self._with_upload_slot(limiter, principal, scope, receive, send, limit)
            return
        await self._bounded(scope, receive, send, limit)

    async def _with_upload_slot(
        self,
        limiter: RateLimiter,
        principal: Principal,
        scope: Scope,
        receive: Receive,
        send: Send,
        limit: BodyLimit,
    ) -> None:
        token = uuid.uuid4().hex
        decision = await anyio.to_thread.run_sync(limiter.acquire_upload, str(principal.key_id), token)
        if not decision.allowed:
            await _too_many(send, decision, "too many uploads in progress for this key")
            return
        try:
            await self._bounded(scope, receive, send, limit)
        finally:
            await anyio.to_thread.run_sync(limiter.release_upload, str(principal.key_id), token)

    async def _bounded(self, scope: Scope, receive: Receive, send: Send, limit: BodyLimit) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(
                scope, _counting_receive(receive, limit, json_body=not _is_multipart(scope)), tracking_send
            )
        except BodyTooLargeError as exc:
            if started:
                raise
            await _send_json(send, 413, exc.limit.message)


def _has_nul(scope: Scope) -> bool:
    query: bytes = scope.get("query_string", b"")
    return "\x00" in scope["path"] or b"%00" in query or b"\x00" in query


async def _too_many(send: Send, decision: Decision, detail: str) -> None:
    await _send_json(send, 429, detail, {"Retry-After": str(decision.retry_after_s)})


def get_principal(request: Request) -> Principal:
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:  # only a route the guard treats as public could get here
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing API key", headers={"WWW-Authenticate": "Bearer"}
        )
    return principal


def require(scope: str) -> Callable[[Request], Principal]:
    """A dependency that answers 403 unless the caller's key has ``scope``."""

    def dependency(request: Request) -> Principal:
        principal = get_principal(request)
        if not principal.allows(scope):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this key lacks the {scope!r} scope")
        return principal

    dependency.scope = scope  # type: ignore[attr-defined]  # read by the route-enumerating test
    return dependency


def check_allowed(session: Session, settings: Settings, caller: Principal, *uris: str | None) -> None:
    """403, one message whether or not the object exists, unless the caller's tenant may use every
    one of ``uris`` (S3 sources, prefixes and outputs)."""
    tenant = session.get(Tenant, caller.tenant_id)
    for uri in uris:
        if uri is None:
            continue
        try:
            allowlist.check(uri, tenant, settings)
        except allowlist.OutsideAllowListError as exc:
            raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from exc


# What the guard may answer on any route behind it, for the OpenAPI description.
GUARDED_RESPONSES: dict[int | str, dict[str, Any]] = {
    # From the HTTP server itself, before the app: e.g. a URL longer than its parser takes.
    400: {"description": "a request the HTTP server could not parse"},
    401: {"model": ErrorOut, "description": "no valid API key"},
    403: {"model": ErrorOut, "description": "the key lacks the scope this route needs"},
    413: {"model": ErrorOut, "description": "the request body is over its limit"},
    503: {"model": ErrorOut, "description": "the database or another dependency is away; see Retry-After"},
    429: {
        "model": ErrorOut,
        "description": "over the key's request rate or concurrent uploads; see Retry-After",
    },
}

PrincipalDep = Annotated[Principal, Depends(get_principal)]
ReadDep = Annotated[Principal, Depends(require("read"))]
WriteDep = Annotated[Principal, Depends(require("write"))]
BackfillDep = Annotated[Principal, Depends(require("backfill"))]
AdminDep = Annotated[Principal, Depends(require("admin"))]
