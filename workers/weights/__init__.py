"""Model weights by name: the registry of known models, the local cache, verified downloads."""

from workers.weights.cache import ModelCache, Pin
from workers.weights.errors import (
    ChecksumMismatchError,
    DownloadFailedError,
    InvalidWeightsError,
    SourceUnreachableError,
    UnknownModelError,
    WeightsError,
)
from workers.weights.registry import KNOWN_MODELS, KnownModel, find_model, mirrored
from workers.weights.resolve import (
    ModelUnavailableError,
    cache_for,
    ensure_model,
    expected_digest,
    model_for,
)

__all__ = [
    "KNOWN_MODELS",
    "ChecksumMismatchError",
    "DownloadFailedError",
    "InvalidWeightsError",
    "KnownModel",
    "ModelCache",
    "ModelUnavailableError",
    "Pin",
    "SourceUnreachableError",
    "UnknownModelError",
    "WeightsError",
    "cache_for",
    "ensure_model",
    "expected_digest",
    "find_model",
    "mirrored",
    "model_for",
]
