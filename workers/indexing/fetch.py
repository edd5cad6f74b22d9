"""Fetch stage: the video as a local file, from our storage, the user's disk or an S3 source."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.core.storage import (
    ObjectNotFoundError,
    download_s3_object,
    file_uri_path,
    parse_s3_uri,
    s3_object_version,
)
from workers.indexing.context import PipelineContext
from workers.indexing.snapshot import JobSnapshot
from workers.media.errors import TooLargeError


@dataclass(frozen=True)
class Fetched:
    path: Path
    etag: str | None  # for an S3 source, the version read


def fetch(job: JobSnapshot, ctx: PipelineContext, tmp: Path) -> Fetched:
    if job.storage_key:
        dest = tmp / "video"
        ctx.storage.download(job.storage_key, dest)
        return Fetched(dest, None)
    uri = job.source_uri or ""
    if uri.startswith("file://"):
        path = file_uri_path(uri)
        if not path.is_file():
            raise ObjectNotFoundError(uri)
        return Fetched(path, None)  # embedded mode reads the user's file where it is
    if uri.startswith("s3://"):
        bucket, key = parse_s3_uri(uri)
        # Refuse an oversized object before paying for its download.
        version = s3_object_version(ctx.s3(), bucket, key)
        if version.size_bytes > ctx.settings.max_upload_bytes:
            raise TooLargeError(
                f"{uri} is {version.size_bytes} bytes; the limit is {ctx.settings.max_upload_bytes}"
            )
        dest = tmp / "video"
        # The version that was sized, even if the object is replaced in between (then: retried).
        download_s3_object(ctx.s3(), bucket, key, dest, etag=version.etag or None)
        return Fetched(dest, version.etag or None)
    raise ObjectNotFoundError(f"job {job.job_id} has no readable source ({uri!r})")
