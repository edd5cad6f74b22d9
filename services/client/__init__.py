"""A typed Python client for the tsmindex HTTP API (httpx).

Responses are parsed into the same pydantic models the API serves, and every call names the
operation it maps to (``OPERATIONS``), which a test checks against the served OpenAPI document."""

from services.client.client import OPERATIONS, Operation, TsmindexClient
from services.client.errors import ApiError, ApiUnavailableError, ClientError, WaitTimeoutError

__all__ = [
    "OPERATIONS",
    "ApiError",
    "ApiUnavailableError",
    "ClientError",
    "Operation",
    "TsmindexClient",
    "WaitTimeoutError",
]
