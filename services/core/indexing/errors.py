"""One error hierarchy for indexing, and the one table that turns foreign exceptions into reasons.

Every failure a job can meet is an ``IndexingError`` whose ``reason`` (a ``FailureReason``) says
what to store and whether the job may run again. Libraries raise their own exceptions (SQLAlchemy,
botocore, kombu, redis, Celery); ``reason_for`` is the single place that translates them.
"""

from __future__ import annotations

from typing import ClassVar

from services.core.indexing.reasons import FailureReason


class IndexingError(Exception):
    """Base of every indexing failure; ``reason`` is stored on the job."""

    reason: ClassVar[FailureReason] = FailureReason.internal_error

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.reason.retryable


class DatabaseUnavailableError(IndexingError):
    """The database did not answer."""

    reason = FailureReason.database_unavailable


class BrokerUnavailableError(IndexingError):
    """The message broker did not answer."""

    reason = FailureReason.broker_unavailable


class TimeLimitError(IndexingError):
    """The run hit its soft time limit."""

    reason = FailureReason.time_limit


class SourceMissingError(IndexingError):
    """The job's bytes are gone (object deleted, file moved)."""

    reason = FailureReason.source_missing


class AccessDeniedError(IndexingError):
    """Our credentials may not read the job's bytes."""

    reason = FailureReason.access_denied


class ModelMismatchError(IndexingError):
    """The model server runs another version than the job was submitted for."""

    reason = FailureReason.model_mismatch


class InferenceError(IndexingError):
    """A clip could not be classified; ``code`` is the model server's own machine code, if any."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        clip_index: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.clip_index = clip_index


class InferenceUnavailableError(InferenceError):
    """The model server did not answer, or answered that it is overloaded."""

    reason = FailureReason.inference_unavailable


class InferenceRejectedError(InferenceError):
    """The model server refused a clip (bad shape, dtype, size)."""

    reason = FailureReason.inference_rejected


class InferenceBadResponseError(InferenceError):
    """The model server answered with a body that is not a prediction."""

    reason = FailureReason.inference_bad_response


def reason_for(exc: BaseException) -> FailureReason:
    """The failure reason of any exception raised while indexing (``internal_error``: a defect)."""
    if isinstance(exc, IndexingError):
        return exc.reason
    import botocore.exceptions
    import kombu.exceptions
    import redis.exceptions
    import sqlalchemy.exc
    from celery.exceptions import SoftTimeLimitExceeded

    if isinstance(exc, sqlalchemy.exc.DBAPIError) and not isinstance(
        exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError
    ):
        return (
            FailureReason.database_unavailable if exc.connection_invalidated else FailureReason.internal_error
        )
    if isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
        return FailureReason.database_unavailable
    if isinstance(exc, sqlalchemy.exc.TimeoutError):  # the connection pool is exhausted
        return FailureReason.database_unavailable
    if isinstance(exc, kombu.exceptions.OperationalError | redis.exceptions.ConnectionError):
        return FailureReason.broker_unavailable
    if isinstance(exc, redis.exceptions.TimeoutError):
        return FailureReason.broker_unavailable
    if isinstance(exc, botocore.exceptions.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
            return FailureReason.source_missing
        if code in ("403", "AccessDenied", "Forbidden"):
            return FailureReason.access_denied
        return FailureReason.storage_unavailable
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return FailureReason.storage_unavailable
    if isinstance(exc, SoftTimeLimitExceeded):
        return FailureReason.time_limit
    return FailureReason.internal_error
