"""Bulk S3 backfills: list a bucket prefix and turn each object into one idempotent index job.

``definition`` (statuses, filters, creating one), ``listing`` (S3 pages), ``runner`` (objects to
jobs, resumably), ``status`` (counts, failures, cancel) and ``export`` (JSON Lines results).
"""

from __future__ import annotations

from services.core.backfills.definition import (
    ACTIVE,
    VIDEO_EXTENSIONS,
    BackfillCounts,
    BackfillError,
    BackfillFilters,
    BackfillKind,
    BackfillStatus,
    ObjectFailure,
    RunOutcome,
    create_backfill,
    find_interrupted,
    parse_prefix_uri,
)
from services.core.backfills.export import export_results
from services.core.backfills.listing import ListedObject, as_utc, list_objects
from services.core.backfills.runner import BackfillRunner, advance, build_runner
from services.core.backfills.status import (
    FinishedJobs,
    cancel,
    counts_of,
    failures,
    finished_jobs,
    refresh,
)

__all__ = [
    "ACTIVE",
    "VIDEO_EXTENSIONS",
    "BackfillCounts",
    "BackfillError",
    "BackfillFilters",
    "BackfillKind",
    "BackfillRunner",
    "BackfillStatus",
    "FinishedJobs",
    "ListedObject",
    "ObjectFailure",
    "RunOutcome",
    "advance",
    "as_utc",
    "build_runner",
    "cancel",
    "counts_of",
    "create_backfill",
    "export_results",
    "failures",
    "find_interrupted",
    "finished_jobs",
    "list_objects",
    "parse_prefix_uri",
    "refresh",
]
