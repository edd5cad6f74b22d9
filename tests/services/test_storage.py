from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from pydantic import SecretStr

from services.core.config import Settings
from services.core.storage import (
    LocalStorage,
    ObjectNotFoundError,
    S3Storage,
    StorageError,
    UploadTooLargeError,
    download_s3_object,
    make_storage,
    parse_s3_uri,
    s3_client,
    s3_object_version,
)


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> LocalStorage | S3Storage:
    if request.param == "local":
        return make_storage(Settings(data_dir=tmp_path))
    settings = Settings(
        storage_backend="s3",
        s3_endpoint_url=request.getfixturevalue("moto_endpoint"),
        s3_bucket=request.getfixturevalue("s3_bucket"),
        s3_access_key_id=SecretStr("test"),
        s3_secret_access_key=SecretStr("test"),
    )
    return make_storage(settings)


def test_put_download_delete_roundtrip(storage: LocalStorage | S3Storage, tmp_path: Path) -> None:
    body = bytes(range(256)) * 20_000  # 5 MB: several read chunks
    stored = storage.put_stream("uploads/a.mp4", io.BytesIO(body), max_bytes=len(body))
    assert (stored.key, stored.size_bytes, stored.sha256) == (
        "uploads/a.mp4",
        len(body),
        hashlib.sha256(body).hexdigest(),
    )
    assert storage.exists("uploads/a.mp4")
    dest = tmp_path / "copy.mp4"
    storage.download("uploads/a.mp4", dest)
    assert dest.read_bytes() == body
    storage.delete("uploads/a.mp4")
    assert not storage.exists("uploads/a.mp4")
    with pytest.raises(ObjectNotFoundError):
        storage.download("uploads/a.mp4", dest)


def test_upload_past_the_limit_is_refused_and_not_stored(storage: LocalStorage | S3Storage) -> None:
    with pytest.raises(UploadTooLargeError):
        storage.put_stream("uploads/big.mp4", io.BytesIO(b"x" * 3_000_000), max_bytes=2_000_000)
    assert not storage.exists("uploads/big.mp4")


def test_local_keys_cannot_escape_the_root(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="escapes"):
        LocalStorage(tmp_path / "objects").put_stream("../x", io.BytesIO(b"x"))


def test_s3_client_uses_the_configured_endpoint(moto_endpoint: str) -> None:
    client = s3_client(
        Settings(
            s3_endpoint_url=moto_endpoint,
            s3_access_key_id=SecretStr("k"),
            s3_secret_access_key=SecretStr("s"),
        )
    )
    assert client.meta.endpoint_url == moto_endpoint


def test_parse_s3_uri() -> None:
    assert parse_s3_uri("s3://bucket/a/b.mp4") == ("bucket", "a/b.mp4")
    with pytest.raises(ValueError):
        parse_s3_uri("s3://bucket/")


def test_a_download_pinned_to_a_version_refuses_a_newer_one(
    moto_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    client = s3_client(
        Settings(
            s3_endpoint_url=moto_endpoint,
            s3_access_key_id=SecretStr("test"),
            s3_secret_access_key=SecretStr("test"),
        )
    )
    first = bytes(range(256)) * 8_000  # 2 MB: several read chunks
    client.put_object(Bucket=s3_bucket, Key="cam/a.mp4", Body=first)
    version = s3_object_version(client, s3_bucket, "cam/a.mp4")
    assert version.size_bytes == len(first)
    download_s3_object(client, s3_bucket, "cam/a.mp4", tmp_path / "a", etag=version.etag)
    assert (tmp_path / "a").read_bytes() == first

    client.put_object(Bucket=s3_bucket, Key="cam/a.mp4", Body=b"replaced")
    with pytest.raises(StorageError, match="PreconditionFailed"):
        download_s3_object(client, s3_bucket, "cam/a.mp4", tmp_path / "b", etag=version.etag)
    assert s3_object_version(client, s3_bucket, "cam/a.mp4").etag != version.etag
    with pytest.raises(ObjectNotFoundError):
        s3_object_version(client, s3_bucket, "cam/gone.mp4")
