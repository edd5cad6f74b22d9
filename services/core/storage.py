"""Object storage for video bytes: an S3 bucket (boto3, any S3-compatible endpoint) or a local
directory (embedded mode). Uploads are streamed in chunks and hashed on the way through."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import unquote, urlparse

from services.core.config import Settings
from services.core.indexing.errors import IndexingError, reason_for
from services.core.indexing.reasons import FailureReason

CHUNK_BYTES = 1024 * 1024


class StorageError(IndexingError):
    """Storage could not be reached; worth retrying."""

    reason = FailureReason.storage_unavailable


class ObjectNotFoundError(StorageError):
    """The object does not exist; retrying will not help."""

    reason = FailureReason.source_missing


class ObjectAccessDeniedError(StorageError):
    """The credentials may not read the object; retrying will not help."""

    reason = FailureReason.access_denied


class UploadTooLargeError(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"upload exceeds {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class StoredObject:
    key: str
    size_bytes: int
    sha256: str


class HashingReader:
    """File-like wrapper that hashes and counts what is read and stops past ``max_bytes``."""

    def __init__(self, stream: BinaryIO, max_bytes: int | None) -> None:
        self._stream = stream
        self._max = max_bytes
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size if size and size > 0 else CHUNK_BYTES)
        self.size += len(data)
        if self._max is not None and self.size > self._max:
            raise UploadTooLargeError(self._max)
        self._hash.update(data)
        return data

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


class ObjectStorage(Protocol):
    def put_stream(self, key: str, stream: BinaryIO, *, max_bytes: int | None = None) -> StoredObject: ...
    def download(self, key: str, dest: Path) -> None: ...
    def read_bytes(self, key: str) -> bytes:
        """A small object whole (thumbnails); ``ObjectNotFoundError`` when it is missing."""
        ...

    def put_bytes(self, key: str, data: bytes, *, content_type: str) -> None:
        """A small object in one request (thumbnails): no multipart machinery per object."""
        ...

    def delete(self, key: str) -> None: ...
    def exists(self, key: str) -> bool: ...


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"key escapes the storage root: {key!r}")
        return path

    def put_stream(self, key: str, stream: BinaryIO, *, max_bytes: int | None = None) -> StoredObject:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        reader = HashingReader(stream, max_bytes)
        tmp = path.with_name(path.name + ".partial")
        try:
            with tmp.open("wb") as out:
                while chunk := reader.read(CHUNK_BYTES):
                    out.write(chunk)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        return StoredObject(key=key, size_bytes=reader.size, sha256=reader.sha256)

    def download(self, key: str, dest: Path) -> None:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFoundError(key)
        shutil.copyfile(path, dest)

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFoundError(key)
        return path.read_bytes()

    def put_bytes(self, key: str, data: bytes, *, content_type: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        tmp.write_bytes(data)
        tmp.replace(path)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()


def s3_client(settings: Settings) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id.get_secret_value() if settings.s3_access_key_id else None,
        aws_secret_access_key=(
            settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
        ),
        config=Config(
            connect_timeout=settings.io_timeout_s,
            read_timeout=settings.io_timeout_s,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": settings.s3_addressing_style},
        ),
    )


class S3Storage:
    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def put_stream(self, key: str, stream: BinaryIO, *, max_bytes: int | None = None) -> StoredObject:
        reader = HashingReader(stream, max_bytes)
        # upload_fileobj reads in multipart-sized chunks: the body is never whole in memory, and a
        # failed read aborts the multipart upload.
        self._call(self.client.upload_fileobj, reader, self.bucket, key)
        return StoredObject(key=key, size_bytes=reader.size, sha256=reader.sha256)

    def download(self, key: str, dest: Path) -> None:
        download_s3_object(self.client, self.bucket, key, dest)

    def read_bytes(self, key: str) -> bytes:
        response = self._call(self.client.get_object, Bucket=self.bucket, Key=key)
        return bytes(self._call(response["Body"].read))

    def put_bytes(self, key: str, data: bytes, *, content_type: str) -> None:
        self._call(self.client.put_object, Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def delete(self, key: str) -> None:
        self._call(self.client.delete_object, Bucket=self.bucket, Key=key)

    def exists(self, key: str) -> bool:
        try:
            self._call(self.client.head_object, Bucket=self.bucket, Key=key)
        except ObjectNotFoundError:
            return False
        return True

    @staticmethod
    def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return _s3_call(fn, *args, **kwargs)


def _s3_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn`` with botocore's errors translated (by ``reason_for``'s table) into storage errors."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(*args, **kwargs)
    except (ClientError, BotoCoreError) as exc:
        error = {
            FailureReason.source_missing: ObjectNotFoundError,
            FailureReason.access_denied: ObjectAccessDeniedError,
        }.get(reason_for(exc), StorageError)
        raise error(str(exc)) from exc


@dataclass(frozen=True)
class ObjectVersion:
    """What a HEAD of an S3 object says: its size and ETag (which changes when its bytes change)."""

    size_bytes: int
    etag: str


def s3_object_version(client: Any, bucket: str, key: str) -> ObjectVersion:
    head = _s3_call(client.head_object, Bucket=bucket, Key=key)
    return ObjectVersion(int(head["ContentLength"]), str(head.get("ETag", "")).strip('"'))


def download_s3_object(client: Any, bucket: str, key: str, dest: Path, *, etag: str | None = None) -> None:
    """Download ``key``; with ``etag``, only that version (a newer one fails with ``StorageError``)."""
    if etag is None:
        _s3_call(client.download_file, bucket, key, str(dest))
        return
    # The transfer manager takes no If-Match; one conditional GET, streamed to the file, does.
    body = _s3_call(client.get_object, Bucket=bucket, Key=key, IfMatch=f'"{etag}"')["Body"]
    try:
        with dest.open("wb") as out:
            for chunk in iter(lambda: _s3_call(body.read, 1024 * 1024), b""):
                out.write(chunk)
    finally:
        body.close()


def parse_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/"):
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def file_uri_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise ValueError(f"not a file:// URI: {uri!r}")
    return Path(unquote(parsed.path))


def make_storage(settings: Settings) -> LocalStorage | S3Storage:
    if settings.storage_backend == "s3":
        return S3Storage(s3_client(settings), settings.s3_bucket)
    if settings.storage_backend == "local":
        return LocalStorage(settings.data_dir / "objects")
    raise ValueError(f"unknown storage backend {settings.storage_backend!r}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
