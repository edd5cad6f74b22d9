"""Listing an S3 prefix, page by page, in key order."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


def as_utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ListedObject:
    key: str
    etag: str
    size: int
    last_modified: datetime | None


def list_objects(
    s3: Any, bucket: str, prefix: str, *, start_after: str | None, page_size: int
) -> Iterator[list[ListedObject]]:
    """Pages of ``ListObjectsV2`` in key order, starting after ``start_after``."""
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "PaginationConfig": {"PageSize": page_size}}
    if start_after:
        params["StartAfter"] = start_after
    for page in s3.get_paginator("list_objects_v2").paginate(**params):
        yield [
            ListedObject(
                key=item["Key"],
                etag=str(item.get("ETag", "")).strip('"'),
                size=int(item.get("Size", 0)),
                last_modified=as_utc(item["LastModified"]) if item.get("LastModified") else None,
            )
            for item in page.get("Contents", [])
        ]
