"""The guard middleware: authentication before any body byte is read, body limits on every route,
per-key rate and upload limits answering 429 with Retry-After."""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from fastapi.testclient import TestClient

from services.api.main import create_app
from services.core.config import Settings
from tests.platform_servers import free_port, wait_port

CHUNK = b"\0" * 65536


@pytest.fixture()
def settings(platform_settings: Settings) -> Settings:
    return platform_settings


class Caller:
    """Drives the ASGI app directly with a body of ``chunks`` chunks, counting what the app pulled."""

    def __init__(self, client: TestClient, chunks: int) -> None:
        self.client, self.chunks, self.pulled = client, chunks, 0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        self.pulled += 1
        return {"type": "http.request", "body": CHUNK, "more_body": self.pulled < self.chunks}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def call(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"testserver"),
                *((k.lower().encode(), v.encode()) for k, v in headers.items()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
            "state": {},
        }
        asyncio.run(self.client.app(scope, self.receive, self.send))  # type: ignore[arg-type]
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")
        return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, json.loads(body)

    @property
    def bytes_read(self) -> int:
        return self.pulled * len(CHUNK)


CHUNKED_JSON = {"content-type": "application/json", "transfer-encoding": "chunked"}


@pytest.mark.parametrize("path", ["/v1/backfills", "/v1/videos", "/v1/nothing-here"])
def test_no_key_is_refused_before_a_byte_of_the_body_is_read(client: TestClient, path: str) -> None:
    caller = Caller(client, chunks=3200)  # 200 MiB, if it were read
    status, headers, body = caller.call("POST", path, CHUNKED_JSON)
    assert (status, headers["www-authenticate"], body) == (401, "Bearer", {"detail": "missing API key"})
    assert caller.pulled == 0
    wrong = Caller(client, chunks=3200)
    assert wrong.call("POST", path, {**CHUNKED_JSON, "authorization": "Bearer tsm_wrong"})[0] == 401
    assert wrong.pulled == 0


@pytest.mark.parametrize("path", ["/v1/backfills", "/v1/videos"])
def test_a_chunked_json_body_is_cut_off_at_the_json_limit(
    client: TestClient, settings: Settings, api_key: str, path: str
) -> None:
    caller = Caller(client, chunks=3200)
    status, _, body = caller.call("POST", path, {**CHUNKED_JSON, "authorization": f"Bearer {api_key}"})
    assert (status, body) == (
        413,
        {"detail": f"request bodies are limited to {settings.max_json_bytes} bytes"},
    )
    assert caller.bytes_read <= settings.max_json_bytes + len(CHUNK)


def test_a_declared_length_over_the_limit_is_refused_unread(client: TestClient, api_key: str) -> None:
    caller = Caller(client, chunks=3200)
    headers = {"content-type": "application/json", "content-length": str(200 * 2**20)}
    status, _, _ = caller.call("POST", "/v1/backfills", {**headers, "authorization": f"Bearer {api_key}"})
    assert (status, caller.pulled) == (413, 0)


def test_requests_past_the_rate_limit_get_429_with_retry_after(settings: Settings, api_key: str) -> None:
    limited = settings.model_copy(update={"rate_limit_per_minute": 3})
    with TestClient(create_app(limited), headers={"Authorization": f"Bearer {api_key}"}) as client:
        codes = [client.get("/v1/labels").status_code for _ in range(3)]
        refused = client.get("/v1/labels")
    assert codes == [200, 200, 200]
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 20  # one request every 20 s at 3 a minute


def test_a_key_has_at_most_its_cap_of_uploads_in_progress(settings: Settings, api_key: str) -> None:
    capped = settings.model_copy(update={"max_concurrent_uploads": 1})
    with TestClient(create_app(capped)) as client:
        headers = {
            "authorization": f"Bearer {api_key}",
            "content-type": "multipart/form-data; boundary=b",
            "transfer-encoding": "chunked",
        }
        released = asyncio.Event()
        results: list[int] = []

        async def slow_receive() -> dict[str, Any]:
            await released.wait()
            return {"type": "http.request", "body": b"", "more_body": False}  # an empty form: 422

        async def both() -> None:
            first = Caller(client, 1)
            second = Caller(client, 1)
            scope_call = asyncio.create_task(_call_async(client, headers, slow_receive, first.send))
            await asyncio.sleep(0.5)  # the first upload holds its slot, waiting for its body
            await _call_async(client, headers, second.receive, second.send)
            results.append(next(m["status"] for m in second.sent if m["type"] == "http.response.start"))
            released.set()
            await scope_call
            third = Caller(client, 1)
            await _call_async(client, headers, third.receive, third.send)
            results.append(next(m["status"] for m in third.sent if m["type"] == "http.response.start"))

        asyncio.run(both())
    assert results[0] == 429
    assert results[1] != 429  # the slot came back when the first upload ended


async def _call_async(client: TestClient, headers: dict[str, str], receive: Any, send: Any) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/videos",
        "raw_path": b"/v1/videos",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    await client.app(scope, receive, send)


@pytest.fixture()
def served_api(tmp_path: Path) -> Iterator[tuple[str, psutil.Process]]:
    """The API under uvicorn in a process of its own (embedded mode, its own data dir, no .env)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSMINDEX_")}
    env |= {"TSMINDEX_MODE": "embedded", "TSMINDEX_DATA_DIR": str(tmp_path / "data")}
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "services.api.main:create_app",
        "--factory",
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(
        command,
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc=proc, timeout_s=60)
        yield f"http://127.0.0.1:{port}", psutil.Process(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _post_unauthenticated(url: str, path: str, total: int) -> tuple[int, int]:
    """POST ``total`` bytes of chunked JSON with no key over a raw socket, stopping as soon as the
    server answers. The status line's code, and how many body bytes were sent."""
    host, port = url.removeprefix("http://").split(":")
    chunk = b"{" + b" " * (2**20 - 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        sock.sendall((head + "Transfer-Encoding: chunked\r\n\r\n").encode())
        sent = 0
        while sent < total and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                break
            sent += len(chunk)
        else:
            if sent >= total:
                sock.sendall(b"0\r\n\r\n")
        status_line = sock.recv(65536).split(b"\r\n", 1)[0]
    return int(status_line.split()[1]), sent


class PeakRss:
    """The highest resident set size of a process, sampled every 20 ms in a thread."""

    def __init__(self, process: psutil.Process) -> None:
        self.process, self.peak, self._stop = process, process.memory_info().rss, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_api_memory_stays_flat_under_200_mib_unauthenticated_bodies(
    served_api: tuple[str, psutil.Process],
) -> None:
    url, process = served_api
    httpx.get(f"{url}/healthz", timeout=10).raise_for_status()
    before = process.memory_info().rss
    with PeakRss(process) as rss:
        answers = [_post_unauthenticated(url, path, 200 * 2**20) for path in ["/v1/backfills", "/v1/videos"]]
    assert [status for status, _ in answers] == [401, 401]
    assert all(sent < 200 * 2**20 for _, sent in answers)  # answered before the body was all sent
    growth = rss.peak - before
    assert growth < 50 * 2**20, f"peak RSS grew by {growth / 2**20:.0f} MiB"
