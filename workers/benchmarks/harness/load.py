"""Uploads under load: many small clips with a fixed number in flight against the real API, then
every accepted upload followed to its end. A 503 with ``Retry-After`` is the API saying "busy": the
client waits as told and tries again; any other 5xx is a failure."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from workers.benchmarks.harness.platform import TERMINAL, Platform

RETRY_AFTER_CAP_S = 5.0  # never sleep longer than this on one Retry-After (keeps a run bounded)
MAX_TRIES = 50


@dataclass
class LoadResult:
    uploads: int
    in_flight: int
    accepted: int = 0
    server_errors: int = 0  # 5xx other than 503-with-Retry-After
    transport_errors: int = 0  # no answer at all (connection reset, client timeout)
    busy: int = 0  # 503 with Retry-After, retried
    other: dict[int, int] = field(default_factory=dict)  # any other unexpected status
    latencies_s: list[float] = field(default_factory=list)  # per answered request
    submit_s: float = 0.0
    total_s: float = 0.0
    succeeded: int = 0
    lost: int = 0  # accepted but not succeeded in time
    duplicated: int = 0  # two label sets, or two uploads answered with one job

    def percentile(self, q: float) -> float:
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def videos_per_s(self) -> float:
        return self.succeeded / self.total_s if self.total_s else 0.0

    def describe(self) -> str:
        return (
            f"{self.uploads} uploads at {self.in_flight} in flight: {self.accepted} accepted, "
            f"{self.server_errors} 5xx, {self.transport_errors} unanswered, {self.busy} busy 503s, "
            f"other {self.other}, p50 "
            f"{self.percentile(0.5):.2f} s, p99 {self.percentile(0.99):.2f} s, {self.succeeded} "
            f"indexed, {self.lost} lost, {self.duplicated} duplicated, {self.videos_per_s:.2f} videos/s"
        )


async def _upload(client: httpx.AsyncClient, path: Path, result: LoadResult) -> str | None:
    body = path.read_bytes()
    for _ in range(MAX_TRIES):
        start = time.perf_counter()
        try:
            response = await client.post("/v1/videos", files={"file": (path.name, body, "video/mp4")})
        except httpx.TransportError:
            result.transport_errors += 1
            return None
        result.latencies_s.append(time.perf_counter() - start)
        if response.status_code in (200, 202):
            return str(response.json()["id"])
        if response.status_code == 503 and "retry-after" in response.headers:
            result.busy += 1
            await asyncio.sleep(min(float(response.headers["retry-after"]), RETRY_AFTER_CAP_S))
            continue
        if response.status_code >= 500:
            result.server_errors += 1
        else:
            result.other[response.status_code] = result.other.get(response.status_code, 0) + 1
        return None
    return None


async def _submit(platform: Platform, clips: list[Path], in_flight: int, result: LoadResult) -> list[str]:
    gate = asyncio.Semaphore(in_flight)
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)

    async with platform.async_client(limits=limits) as client:

        async def one(path: Path) -> str | None:
            async with gate:
                return await _upload(client, path, result)

        ids = await asyncio.gather(*(one(p) for p in clips))
    return [i for i in ids if i is not None]


def run_load(platform: Platform, clips: list[Path], *, in_flight: int, timeout_s: float = 600) -> LoadResult:
    """Upload every clip (``in_flight`` at a time), then wait for the accepted jobs to end."""
    result = LoadResult(uploads=len(clips), in_flight=in_flight)
    start = time.monotonic()
    ids = asyncio.run(_submit(platform, clips, in_flight, result))
    result.submit_s = time.monotonic() - start
    result.accepted = len(ids)
    result.duplicated = len(ids) - len(set(ids))
    states = platform.wait_jobs(sorted(set(ids)), timeout_s=timeout_s, poll_s=1.0)
    result.total_s = time.monotonic() - start
    result.succeeded = sum(s.status == "succeeded" for s in states.values())
    result.lost = sum(1 for j in set(ids) if j not in states or states[j].status not in TERMINAL)
    result.lost += sum(1 for s in states.values() if s.status == "failed")
    result.duplicated += sum(1 for s in states.values() if s.label_rows != s.label_ranks)
    return result
