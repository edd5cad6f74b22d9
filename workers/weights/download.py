"""Fetch a file over HTTP(S) into a folder: fails fast offline, hashes while streaming, and never leaves
a partial file where a complete one is expected."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from workers.weights.errors import (
    ChecksumMismatchError,
    DownloadFailedError,
    InvalidWeightsError,
    SourceUnreachableError,
    WeightsError,
)

# (bytes received so far, total bytes when the server says)
ProgressCallback = Callable[[int, int | None], None]
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Downloaded:
    path: Path
    sha256: str
    size_bytes: int


def check_resolves(host: str, port: int, *, timeout_s: float) -> None:
    """Resolve ``host`` within ``timeout_s``.

    A socket's timeout does not cover name resolution, and a resolver that gets no answer retries for
    10 s or more; the lookup runs in a daemon thread so that an offline machine is told at once.
    """
    failure: list[BaseException] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            failure.append(exc)

    thread = threading.Thread(target=lookup, name=f"resolve {host}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise SourceUnreachableError(f"{host}: no answer from name resolution in {timeout_s:g} s")
    if failure:
        raise SourceUnreachableError(f"{host}: cannot resolve the name ({failure[0]})")


def download(
    url: str,
    folder: Path,
    filename: str,
    *,
    expected_sha256: str | None = None,
    validate: Callable[[Path], None] | None = None,
    connect_timeout_s: float = 3.0,
    read_timeout_s: float = 30.0,
    on_progress: ProgressCallback | None = None,
) -> Downloaded:
    """``url`` -> ``folder/filename``, checked against ``expected_sha256`` and then by ``validate``
    (which sees the file under its final name and raises to refuse it).

    The bytes land in a private temporary folder next to the destination and are moved into place
    only once they pass: an error, a kill or a wrong digest leaves the folder as it was.
    """
    folder.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=folder, prefix=".download-"))
    try:
        part = work / filename
        digest, size = _fetch(url, part, connect_timeout_s, read_timeout_s, on_progress)
        if expected_sha256 is not None and digest != expected_sha256.lower():
            raise ChecksumMismatchError(
                f"{url}: the downloaded file's sha256 is {digest}, expected {expected_sha256.lower()}; "
                "nothing was kept"
            )
        if validate is not None:
            try:
                validate(part)
            except WeightsError:
                raise
            except Exception as exc:  # the loader's many error types all mean "not this network"
                raise InvalidWeightsError(f"{url}: {exc}") from exc
        final = folder / filename
        os.replace(part, final)
        return Downloaded(path=final, sha256=digest, size_bytes=size)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _fetch(
    url: str,
    dest: Path,
    connect_timeout_s: float,
    read_timeout_s: float,
    on_progress: ProgressCallback | None,
) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DownloadFailedError(f"{url}: only http(s) URLs can be downloaded")
    check_resolves(
        parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), timeout_s=connect_timeout_s
    )
    timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s)
    digest = hashlib.sha256()
    size = 0
    try:
        # identity: the bytes hashed and counted are the file's, never a compressed transfer of it.
        headers = {"Accept-Encoding": "identity"}
        with httpx.stream("GET", url, headers=headers, timeout=timeout, follow_redirects=True) as response:
            if response.status_code != 200:
                raise DownloadFailedError(f"{url}: HTTP {response.status_code} {response.reason_phrase}")
            length = response.headers.get("content-length")
            total = int(length) if length and length.isdigit() else None
            with dest.open("wb") as out:
                for chunk in response.iter_bytes(CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    if on_progress is not None:
                        on_progress(size, total)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise SourceUnreachableError(f"{url}: cannot connect ({exc or type(exc).__name__})") from exc
    except httpx.HTTPError as exc:  # read timeouts, resets, protocol errors once connected
        raise DownloadFailedError(f"{url}: transfer failed ({exc or type(exc).__name__})") from exc
    if total is not None and size != total:
        raise DownloadFailedError(f"{url}: received {size} of {total} bytes")
    return digest.hexdigest(), size
