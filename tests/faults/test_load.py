"""Uploads under load against the real API and worker (the full 500 and 256 in flight: `tsmindex
bench faults`)."""

from __future__ import annotations

import pytest

from workers.benchmarks.harness.clips import ClipMaker
from workers.benchmarks.harness.load import run_load
from workers.benchmarks.harness.platform import Platform

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]


def test_uploads_at_64_in_flight_answer_and_index_once(platform: Platform, clip_maker: ClipMaker) -> None:
    clips = [clip_maker.make(1) for _ in range(128)]
    result = run_load(platform, clips, in_flight=64, timeout_s=240)
    print("\n" + result.describe())
    assert (result.server_errors, result.transport_errors) == (0, 0), result.describe()
    assert result.other == {}, result.describe()
    assert result.accepted == 128
    assert (result.succeeded, result.lost, result.duplicated) == (128, 0, 0), result.describe()
