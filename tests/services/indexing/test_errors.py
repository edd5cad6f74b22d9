from __future__ import annotations

import botocore.exceptions
import kombu.exceptions
import pytest
import redis.exceptions
import sqlalchemy.exc
from celery.exceptions import SoftTimeLimitExceeded

from services.core.indexing.errors import InferenceRejectedError, InferenceUnavailableError, reason_for
from services.core.indexing.reasons import FailureReason
from services.core.storage import ObjectAccessDeniedError, ObjectNotFoundError, StorageError
from workers.media.errors import CorruptVideoError, DecodeTimeoutError, NotAVideoError


def _client_error(code: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": code}}, "GetObject")


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (CorruptVideoError("x"), FailureReason.corrupt),
        (NotAVideoError("x"), FailureReason.not_a_video),
        (DecodeTimeoutError("x"), FailureReason.timeout),
        (InferenceUnavailableError("x"), FailureReason.inference_unavailable),
        (InferenceRejectedError("x", code="bad_shape"), FailureReason.inference_rejected),
        (StorageError("x"), FailureReason.storage_unavailable),
        (ObjectNotFoundError("x"), FailureReason.source_missing),
        (ObjectAccessDeniedError("x"), FailureReason.access_denied),
        (
            sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("refused")),
            FailureReason.database_unavailable,
        ),
        (sqlalchemy.exc.TimeoutError("QueuePool limit reached"), FailureReason.database_unavailable),
        (sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("dup")), FailureReason.internal_error),
        (kombu.exceptions.OperationalError("refused"), FailureReason.broker_unavailable),
        (redis.exceptions.ConnectionError("refused"), FailureReason.broker_unavailable),
        (
            botocore.exceptions.EndpointConnectionError(endpoint_url="http://s3"),
            FailureReason.storage_unavailable,
        ),
        (_client_error("NoSuchKey"), FailureReason.source_missing),
        (_client_error("AccessDenied"), FailureReason.access_denied),
        (_client_error("SlowDown"), FailureReason.storage_unavailable),
        (SoftTimeLimitExceeded(), FailureReason.time_limit),
        (ZeroDivisionError(), FailureReason.internal_error),
    ],
)
def test_one_table_maps_every_exception_to_a_reason(exc: BaseException, reason: FailureReason) -> None:
    assert reason_for(exc) is reason


def test_only_outages_and_time_limits_are_retryable() -> None:
    assert {r for r in FailureReason if r.retryable} == {
        FailureReason.inference_unavailable,
        FailureReason.storage_unavailable,
        FailureReason.database_unavailable,
        FailureReason.broker_unavailable,
        FailureReason.time_limit,
    }
