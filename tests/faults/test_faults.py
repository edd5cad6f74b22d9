"""Faults against the running platform: every job ends succeeded or failed for a permanent reason,
none has two label sets, each webhook arrives once per outcome (workers/benchmarks/harness)."""

from __future__ import annotations

import pytest

from workers.benchmarks.harness import scenarios
from workers.benchmarks.harness.clips import ClipMaker
from workers.benchmarks.harness.platform import Platform

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]


def _check(result: scenarios.FaultResult) -> None:
    print(f"\n{result.fault}: recovery {result.recovery_s} s")
    assert result.ok, result.describe()
    assert result.recovery_s is not None and result.recovery_s <= scenarios.RECOVERY_TIMEOUT_S


def test_sigkill_of_a_prefork_child_mid_job(platform: Platform, clip_maker: ClipMaker) -> None:
    result = scenarios.child_kill(platform, clip_maker)
    _check(result)
    assert result.succeeded == result.jobs


def test_sigkill_of_the_whole_worker_then_restart(platform: Platform, clip_maker: ClipMaker) -> None:
    result = scenarios.worker_kill(platform, clip_maker)
    _check(result)
    assert result.succeeded == result.jobs


def test_broker_data_loss_with_jobs_queued(platform: Platform, clip_maker: ClipMaker) -> None:
    result = scenarios.broker_flush(platform, clip_maker)
    _check(result)
    assert result.succeeded == result.jobs


def test_model_server_down_during_submissions(platform: Platform, clip_maker: ClipMaker) -> None:
    result = scenarios.model_server_down(platform, clip_maker, outage_s=20)
    _check(result)
    assert result.succeeded == result.jobs
    # Waiting for the server is no failure: no attempt (a failed run) was burned on the outage.
    assert [s.attempts for s in result.states.values()] == [0] * result.jobs


def test_postgres_restarted_mid_job(platform: Platform, clip_maker: ClipMaker) -> None:
    result = scenarios.postgres_restart(platform, clip_maker)
    _check(result)
    assert result.succeeded == result.jobs


def test_job_time_limit_hit(platform: Platform, clip_maker: ClipMaker) -> None:
    result = scenarios.time_limit(platform, clip_maker)
    _check(result)
    short, long = result.states.values()
    assert short.status == "succeeded"
    assert long.status == "failed"


def test_duplicate_deliveries_index_once(platform: Platform, clip_maker: ClipMaker) -> None:
    result = scenarios.duplicate_deliveries(platform, clip_maker, copies=4)
    _check(result)
    (state,) = result.states.values()
    assert (state.status, state.attempts) == ("succeeded", 0)
    assert list(result.webhooks.values()) == [{"succeeded": 1}]


def test_s3_down_during_a_backfill(platform: Platform, clip_maker: ClipMaker) -> None:
    result = scenarios.s3_down_during_backfill(platform, clip_maker)
    _check(result)
    assert result.succeeded == result.jobs == 3
