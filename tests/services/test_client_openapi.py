"""The client and the served OpenAPI document agree: every client operation exists with its method,
path, query parameters, body fields and response model, and every API operation has a client call."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from services.api.main import create_app
from services.api.schemas import BackfillOut, JobOut, JobPage, SourceRequest
from services.client import OPERATIONS, Operation, TsmindexClient
from services.core.config import Settings

# Client methods built on other calls rather than mapped to one operation.
COMPOSITES = {"wait", "wait_backfill", "close"}


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return create_app(Settings(_env_file=None)).openapi()  # type: ignore[call-arg]


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    resolved: dict[str, Any] = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return resolved


def _served(doc: dict[str, Any], op: Operation) -> dict[str, Any]:
    methods = doc["paths"].get(op.path)
    assert methods is not None, f"the API serves no path {op.path}"
    served: dict[str, Any] | None = methods.get(op.method.lower())
    assert served is not None, f"the API serves no {op.method} {op.path}"
    return served


def _check(openapi: dict[str, Any], op: Operation) -> None:
    served = _served(openapi, op)
    params = {(p["in"], p["name"]) for p in served.get("parameters", [])}
    assert {("query", q) for q in op.query} <= params
    assert {n for where, n in params if where == "path"} == {
        part[1:-1] for part in op.path.split("/") if part.startswith("{")
    }
    success = next(v for k, v in served["responses"].items() if k.startswith("2"))
    if op.media_type is not None:
        assert set(success["content"]) == {op.media_type}
    elif op.response is None:
        assert "content" not in success
    else:
        schema = success["content"]["application/json"]["schema"]
        assert schema["$ref"].rsplit("/", 1)[1] == op.response.__name__
    content = served.get("requestBody", {}).get("content", {})
    if op.body is not None:
        body = _resolve(openapi, content["application/json"]["schema"])
        assert set(op.body.model_fields) == set(body["properties"])
        assert set(body.get("required", [])) <= set(op.body.model_fields)
    if op.form:
        form = _resolve(openapi, content["multipart/form-data"]["schema"])
        assert set(op.form) <= set(form["properties"])
        assert set(form.get("required", [])) <= set(op.form)


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_each_client_operation_is_served_as_the_client_calls_it(openapi: dict[str, Any], name: str) -> None:
    _check(openapi, OPERATIONS[name])


@pytest.mark.parametrize(
    "wrong",
    [
        Operation("GET", "/v1/job/{job_id}", JobOut),  # no such path
        Operation("PUT", "/v1/jobs/{job_id}", JobOut),  # no such method
        Operation("GET", "/v1/jobs", JobPage, query=("state",)),  # no such parameter
        Operation("GET", "/v1/jobs/{job_id}", JobPage),  # another response model
        Operation("POST", "/v1/backfills", BackfillOut, body=SourceRequest),  # another body
        Operation("POST", "/v1/videos", JobOut, form=("video",)),  # no such form field
    ],
)
def test_the_check_fails_on_an_operation_the_api_does_not_serve(
    openapi: dict[str, Any], wrong: Operation
) -> None:
    with pytest.raises((AssertionError, KeyError)):
        _check(openapi, wrong)


def test_every_client_method_maps_to_an_operation() -> None:
    public = {n for n, _ in inspect.getmembers(TsmindexClient, inspect.isfunction) if not n.startswith("_")}
    assert public - COMPOSITES == set(OPERATIONS)


def test_every_api_operation_has_a_client_call(openapi: dict[str, Any]) -> None:
    served = {
        (method.upper(), path)
        for path, methods in openapi["paths"].items()
        if path.startswith("/v1/")
        for method in methods
    }
    called = {(op.method, op.path) for op in OPERATIONS.values()}
    assert served - called == set(), "add these API operations to services/client (OPERATIONS and a method)"
