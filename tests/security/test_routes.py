"""Every route of the app: open ones are exactly the health and documentation routes; every other
one refuses a missing key (401) and a key without its scope (403), and lets a key with it through."""

from __future__ import annotations

import re
import uuid

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Route

from services.api.guard import PUBLIC_PATHS
from services.api.main import create_app
from services.core.config import Settings
from tests.security.conftest import make_key

OPEN = {"/healthz", "/readyz", "/metrics"} | PUBLIC_PATHS


def _scope_of(route: APIRoute) -> str | None:
    scopes = {getattr(dep.call, "scope", None) for dep in route.dependant.dependencies} - {None}
    assert len(scopes) <= 1, route.path
    return next(iter(scopes), None)


def _routes(app: FastAPI) -> list[Route]:
    """The app's routes, those of included routers too (FastAPI includes routers lazily)."""
    found: list[Route] = []
    for route in app.routes:
        included = getattr(route, "original_router", None)
        found += [r for r in (included.routes if included is not None else [route]) if isinstance(r, Route)]
    return found


def _url(path: str) -> str:
    return re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)


def test_every_route_is_open_or_needs_a_key_with_its_scope(settings: Settings) -> None:
    app = create_app(settings)
    routes = _routes(app)
    # Every operation of the served description is among them.
    assert set(app.openapi()["paths"]) <= {r.path for r in routes}
    assert {r.path for r in routes if not isinstance(r, APIRoute) or _scope_of(r) is None} == OPEN
    suffix = uuid.uuid4().hex[:8]
    keys = {
        scope: make_key(settings, f"routes-{scope}-{suffix}", scopes=(scope,))
        for scope in ("read", "write", "backfill", "admin")
    }
    checked = 0
    with TestClient(app) as client:
        for route in (r for r in routes if isinstance(r, APIRoute) and _scope_of(r) is not None):
            scope = _scope_of(route)
            for method in route.methods or ():
                url = _url(route.path)
                assert client.request(method, url).status_code == 401, (method, route.path)
                other = "read" if scope != "read" else "write"
                denied = client.request(method, url, headers={"Authorization": f"Bearer {keys[other]}"})
                assert denied.status_code == 403, (method, route.path)
                allowed = client.request(method, url, headers={"Authorization": f"Bearer {keys[str(scope)]}"})
                assert allowed.status_code not in (401, 403), (method, route.path, allowed.text)
                admin = client.request(method, url, headers={"Authorization": f"Bearer {keys['admin']}"})
                assert admin.status_code not in (401, 403), (method, route.path)
                checked += 1
    assert checked >= 15
