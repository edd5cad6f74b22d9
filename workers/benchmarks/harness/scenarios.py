"""The fault scenarios of the reliability suite. Each one submits its own jobs, causes its fault,
removes the cause, waits, and returns a :class:`FaultResult` judged by the same rules: every job ends
``succeeded`` or ``failed`` with a permanent reason, no job has two label sets, and each job's webhook
arrived exactly once for the outcome it ended with. Each scenario leaves the platform running."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from services.core.indexing.reasons import FailureReason
from workers.benchmarks.harness.clips import ClipMaker
from workers.benchmarks.harness.platform import TERMINAL, JobState, Platform

RECOVERY_TIMEOUT_S = 120.0  # the bound: every job final within 120 s of the cause going away
WEBHOOK_GRACE_S = 20.0  # webhooks go out after the commit: give the last ones time to arrive


def is_permanent(reason: str | None) -> bool:
    """Whether a failed job failed for good (a reason that may pass means it was given up too early)."""
    known = {r.value for r in FailureReason}
    return reason in known and not FailureReason(reason).retryable


@dataclass
class FaultResult:
    fault: str
    jobs: int
    succeeded: int = 0
    lost: list[str] = field(default_factory=list)  # not final, or failed for a reason that may pass
    duplicated: list[str] = field(default_factory=list)  # two label sets, or a webhook twice or wrong
    unnotified: list[str] = field(default_factory=list)  # final without its webhook
    recovery_s: float | None = None  # from the cause going away to every job final
    states: dict[str, JobState] = field(default_factory=dict)
    webhooks: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unnotified)

    def describe(self) -> str:
        states = {j[:8]: (s.status, s.reason, s.attempts) for j, s in self.states.items()}
        return (
            f"{self.fault}: {self.succeeded}/{self.jobs} succeeded, lost {self.lost}, duplicated "
            f"{self.duplicated}, unnotified {self.unnotified}, recovery {self.recovery_s} s; "
            f"states {states}; webhooks {self.webhooks}"
        )


def judge(
    fault: str, platform: Platform, job_ids: list[str], since: float, *, webhooks: bool = True
) -> FaultResult:
    """Wait (bounded) for the jobs to end and for their webhooks, then apply the rules."""
    states = platform.wait_jobs(job_ids, timeout_s=RECOVERY_TIMEOUT_S)
    final = all(j in states and states[j].status in TERMINAL for j in job_ids)
    result = FaultResult(
        fault, len(job_ids), recovery_s=round(time.monotonic() - since, 1) if final else None
    )
    deadline = time.monotonic() + WEBHOOK_GRACE_S
    while webhooks and time.monotonic() < deadline:
        if all(platform.webhooks.of(j).get(s.status, 0) for j, s in states.items() if s.status in TERMINAL):
            break
        time.sleep(0.2)
    time.sleep(0.5 if webhooks else 0)  # a duplicate delivery would land right behind the first
    result.states = {j: states[j] for j in job_ids if j in states}  # in submission order
    for job_id in job_ids:
        state = states.get(job_id)
        if state is None or state.status not in TERMINAL:
            result.lost.append(job_id)
            continue
        if state.status == "failed" and not is_permanent(state.reason):
            result.lost.append(job_id)
        result.succeeded += state.status == "succeeded"
        delivered = platform.webhooks.of(job_id)
        result.webhooks[job_id] = delivered
        twice = any(n > 1 for n in delivered.values()) or set(delivered) - {state.status}
        if state.label_rows != state.label_ranks or twice:
            result.duplicated.append(job_id)
        if webhooks and not delivered.get(state.status):
            result.unnotified.append(job_id)
    return result


def child_kill(platform: Platform, clips: ClipMaker, *, jobs: int = 2, seconds: float = 40) -> FaultResult:
    """SIGKILL of one prefork child while both children run a job."""
    ids = [platform.upload(clips.make(seconds)) for _ in range(jobs)]
    platform.wait_status(ids, "running", count=min(jobs, 2), timeout_s=60)
    platform.kill_worker_child()
    return judge("SIGKILL of a prefork child", platform, ids, time.monotonic())


def worker_kill(platform: Platform, clips: ClipMaker, *, jobs: int = 3, seconds: float = 40) -> FaultResult:
    """SIGKILL of the worker's whole process group mid-job, then a new worker."""
    ids = [platform.upload(clips.make(seconds)) for _ in range(jobs)]
    platform.wait_status(ids, "running", count=min(jobs, 2), timeout_s=60)
    platform.kill_worker()
    platform.start_worker()
    return judge("SIGKILL of the whole worker, restarted", platform, ids, time.monotonic())


def broker_flush(platform: Platform, clips: ClipMaker, *, jobs: int = 2, seconds: float = 4) -> FaultResult:
    """The broker loses every queued message (FLUSHALL) while no worker runs."""
    platform.stop_worker()
    ids = [platform.upload(clips.make(seconds)) for _ in range(jobs)]
    platform.redis.flushall()
    platform.start_worker()
    return judge("broker data loss (FLUSHALL), jobs queued", platform, ids, time.monotonic())


def model_server_down(
    platform: Platform,
    clips: ClipMaker,
    *,
    jobs: int = 2,
    seconds: float = 4,
    outage_s: float = 20,
    real_stop: bool = False,
) -> FaultResult:
    """The model server is unreachable while jobs are submitted; ``real_stop`` stops TorchServe
    itself (a restart takes a while), otherwise its relay refuses connections."""
    assert platform.model_relay is not None
    if real_stop:
        platform.model_server.stop()
    else:
        platform.model_relay.down()
    began = time.monotonic()
    ids = [platform.upload(clips.make(seconds)) for _ in range(jobs)]
    time.sleep(max(0.0, outage_s - (time.monotonic() - began)))
    if real_stop:
        platform.model_server.start()
    else:
        platform.model_relay.up()
    return judge(f"model server down {outage_s:g} s during submissions", platform, ids, time.monotonic())


def postgres_restart(
    platform: Platform, clips: ClipMaker, *, jobs: int = 2, seconds: float = 40, down_s: float = 3
) -> FaultResult:
    """PostgreSQL stopped (every session cut) while two jobs run and more wait behind them, so that
    the outage hits both running jobs and the claim of the next ones; then started again."""
    running = [platform.upload(clips.make(seconds)) for _ in range(2)]
    waiting = [platform.upload(clips.make(2)) for _ in range(jobs)]
    platform.wait_status(running, "running", count=2, timeout_s=60)
    platform.postgres.stop(mode="fast")
    time.sleep(down_s)
    platform.postgres.start()
    return judge("PostgreSQL restarted mid-job", platform, running + waiting, time.monotonic())


def time_limit(
    platform: Platform, clips: ClipMaker, *, limit_s: float = 5, long_seconds: float = 240
) -> FaultResult:
    """A worker whose job time limit is tiny: a short job succeeds; a long one is killed each time
    and must end failed for a permanent reason, not stay running."""
    platform.stop_worker()
    platform.start_worker(TSMINDEX_JOB_TIME_LIMIT_S=str(limit_s), TSMINDEX_JOB_DEADLINE_S="40")
    try:
        ids = [platform.upload(clips.make(2)), platform.upload(clips.make(long_seconds), window_s="0.5")]
        return judge(f"job time limit {limit_s:g} s", platform, ids, time.monotonic())
    finally:
        platform.stop_worker()
        platform.start_worker()


def duplicate_deliveries(
    platform: Platform, clips: ClipMaker, *, copies: int = 4, seconds: float = 20
) -> FaultResult:
    """The same job id delivered ``copies`` times at once."""
    platform.stop_worker()
    job_id = platform.upload(clips.make(seconds))
    for _ in range(copies - 1):
        platform.send_index_message(job_id)
    platform.start_worker()
    result = judge(f"{copies} deliveries of one job", platform, [job_id], time.monotonic())
    state = result.states.get(job_id)
    if state is not None and state.attempts != 0:
        # Attempts count failed runs: a delivery that found the job taken must not add one.
        result.duplicated.append(job_id)
    return result


def s3_down_during_backfill(
    platform: Platform, clips: ClipMaker, *, objects: int = 3, seconds: float = 4, outage_s: float = 15
) -> FaultResult:
    """The object store goes away right after a backfill is created, and comes back."""
    assert platform.s3_relay is not None
    source = f"{platform.bucket}-src"
    s3 = platform.s3()
    s3.create_bucket(Bucket=source)
    for i in range(objects):
        s3.upload_file(str(clips.make(seconds)), source, f"clips/{i}.mp4")
    with platform.client() as client:
        response = client.post(
            "/v1/backfills",
            json={"source_uri": f"s3://{source}/clips/", "webhook_url": platform.webhooks.url},
        )
    response.raise_for_status()
    backfill_id = response.json()["id"]
    platform.s3_relay.down()
    time.sleep(outage_s)
    platform.s3_relay.up()
    since = time.monotonic()
    status = _wait_backfill(platform, backfill_id, timeout_s=RECOVERY_TIMEOUT_S)
    ids = platform.backfill_jobs(backfill_id)
    result = judge("S3 down during a backfill", platform, ids, since)
    if status != "completed" or len(ids) != objects:
        result.lost.append(f"backfill {backfill_id}: {status}, {len(ids)} of {objects} jobs")
    return result


def _wait_backfill(platform: Platform, backfill_id: str, *, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    status = "unknown"
    with platform.client() as client:
        while time.monotonic() < deadline:
            response = client.get(f"/v1/backfills/{backfill_id}")
            if response.status_code == 200:
                status = str(response.json()["status"])
                if status in ("completed", "failed", "cancelled"):
                    return status
            time.sleep(0.5)
    return status


Scenario = Callable[[Platform, ClipMaker], FaultResult]

SCENARIOS: dict[str, Scenario] = {
    "child_kill": child_kill,
    "worker_kill": worker_kill,
    "broker_flush": broker_flush,
    "model_server_down": model_server_down,
    "postgres_restart": postgres_restart,
    "time_limit": time_limit,
    "duplicate_deliveries": duplicate_deliveries,
    "s3_down_during_backfill": s3_down_during_backfill,
}
