"""Standard Webhooks signatures: a delivery verifies only with its own secret, id, timestamp and body,
within the tolerance."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path
from typing import Any

import pytest

from services.core.signing import (
    SignatureError,
    SignatureFailure,
    new_secret,
    secret_bytes,
    sign,
    signed_headers,
    verify,
)

NOW = 1_800_000_000.0


def test_the_signature_is_hmac_sha256_of_id_timestamp_and_body() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    expected = hmac.new(b"k" * 24, b"msg_1.1800000000.{}", hashlib.sha256).digest()
    assert sign(secret, "msg_1", 1_800_000_000, b"{}") == "v1," + base64.b64encode(expected).decode()


def test_a_fresh_delivery_verifies() -> None:
    secret = new_secret()
    assert len(secret_bytes(secret)) == 24
    headers = signed_headers(secret, "msg_a", b'{"x":1}', now=NOW)
    verify(b'{"x":1}', headers, secret, now=NOW + 10)
    verify(b'{"x":1}', {k.upper(): v for k, v in headers.items()}, secret, now=NOW)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"body": b'{"x":2}'}, SignatureFailure.mismatch),
        ({"secret": "other"}, SignatureFailure.mismatch),
        ({"id": "msg_b"}, SignatureFailure.mismatch),  # a body moved to another delivery
        ({"now": NOW + 301}, SignatureFailure.too_old),  # a replay after the tolerance
        ({"now": NOW - 301}, SignatureFailure.too_new),
        ({"timestamp": "soon"}, SignatureFailure.bad_timestamp),
        ({"drop": "webhook-signature"}, SignatureFailure.missing_header),
    ],
)
def test_anything_changed_is_refused(change: dict[str, object], reason: SignatureFailure) -> None:
    secret = new_secret()
    headers = signed_headers(secret, "msg_a", b'{"x":1}', now=NOW)
    if "id" in change:
        headers["webhook-id"] = str(change["id"])
    if "timestamp" in change:
        headers["webhook-timestamp"] = str(change["timestamp"])
    if "drop" in change:
        del headers[str(change["drop"])]
    body = change.get("body", b'{"x":1}')
    assert isinstance(body, bytes)
    with pytest.raises(SignatureError) as refused:
        verify(body, headers, str(change.get("secret", secret)), now=float(str(change.get("now", NOW))))
    assert refused.value.reason is reason


def test_any_of_several_signatures_may_match_during_a_rotation() -> None:
    old, new = new_secret(), new_secret()
    headers = signed_headers(new, "msg_r", b"{}", now=NOW)
    headers["webhook-signature"] = f"{sign(old, 'msg_r', int(NOW), b'{}')} {headers['webhook-signature']}"
    verify(b"{}", headers, old, now=NOW)
    verify(b"{}", headers, new, now=NOW)


def test_a_malformed_whsec_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="base64"):
        secret_bytes("whsec_not base64!")


def test_the_readme_verification_snippet_agrees() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    snippet = readme.split("Verifying on the receiving side:\n\n```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)  # our own README
    secret = new_secret()
    headers = signed_headers(secret, "msg_readme", b"{}")
    assert namespace["verify"](b"{}", headers, secret) is True
    assert namespace["verify"](b"{ }", headers, secret) is False
