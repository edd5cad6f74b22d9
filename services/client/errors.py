"""The client's errors: one base, and httpx's exceptions translated in one place (``client._call``)."""

from __future__ import annotations


class ClientError(Exception):
    """Base of every error the client raises."""


class ApiError(ClientError):
    """The API answered with an error status."""

    def __init__(self, status_code: int, detail: object, *, method: str, url: str) -> None:
        self.status_code = status_code
        self.detail = detail
        super().__init__(f"{method} {url}: {status_code} {detail}")


class ApiUnavailableError(ClientError):
    """The API could not be reached, or did not answer in time."""


class WaitTimeoutError(ClientError):
    """A job or backfill was still running when the wait ran out."""
