"""Why a model could not be found, fetched or trusted: one family, one message each."""

from __future__ import annotations


class WeightsError(Exception):
    """A model could not be found, fetched or verified."""


class UnknownModelError(WeightsError):
    """No known model has this name."""


class SourceUnreachableError(WeightsError):
    """The publisher's host did not answer in time (offline, name resolution, firewall)."""


class DownloadFailedError(WeightsError):
    """The host answered, but not with the whole file (an HTTP error, a cut-off transfer)."""


class ChecksumMismatchError(WeightsError):
    """The file's SHA-256 is not the one published or pinned for it."""


class InvalidWeightsError(WeightsError):
    """The file is not the network it is listed as."""
