"""Why a job did not succeed: one enum, and which reasons pass on their own (retryable).

The values are the strings jobs store in ``jobs.reason`` and metrics label with; they stay stable.
"""

from __future__ import annotations

from enum import StrEnum


class FailureReason(StrEnum):
    # Transient: the job waits (capped backoff) and runs again until its deadline.
    inference_unavailable = "inference_unavailable"
    storage_unavailable = "storage_unavailable"
    database_unavailable = "database_unavailable"
    broker_unavailable = "broker_unavailable"
    time_limit = "time_limit"  # the run hit its soft time limit (it counts as an attempt)
    # Permanent: retrying the same bytes with the same model cannot help.
    timeout = "timeout"  # the file used up its decode budget
    corrupt = "corrupt"
    not_a_video = "not_a_video"
    unsupported_codec = "unsupported_codec"
    too_large = "too_large"
    media_error = "media_error"
    access_denied = "access_denied"
    source_missing = "source_missing"
    model_mismatch = "model_mismatch"
    inference_rejected = "inference_rejected"
    inference_bad_response = "inference_bad_response"
    too_many_attempts = "too_many_attempts"
    deadline_exceeded = "deadline_exceeded"
    cancelled = "cancelled"
    internal_error = "internal_error"

    @property
    def retryable(self) -> bool:
        return self in _RETRYABLE


_RETRYABLE = frozenset(
    {
        FailureReason.inference_unavailable,
        FailureReason.storage_unavailable,
        FailureReason.database_unavailable,
        FailureReason.broker_unavailable,
        FailureReason.time_limit,
    }
)
