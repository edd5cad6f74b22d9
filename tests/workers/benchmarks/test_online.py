"""The online bench's scoring, on label sequences whose answers are known, and one small real run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from workers.benchmarks.online import score_shot, settle_lags
from workers.cli import app
from workers.training.motion import MotionPath

# A shot of 1 + 3 legs of 5 frames: right, down, left.
TRUTH = ["none"] + ["right"] * 5 + ["down"] * 5 + ["left"] * 5
CHANGES = (1, 6, 11)


def _path() -> MotionPath:
    n = len(TRUTH)
    return MotionPath(
        frames=np.zeros((n, 2, 2, 3), np.uint8),
        labels=tuple(TRUTH),
        changes=CHANGES,
        centres=np.zeros((n, 2)),
    )


def test_lag_counts_frames_until_the_label_is_right_for_the_rest_of_the_leg() -> None:
    late = ["x"] + ["right"] * 5 + ["right", "right", "down", "right", "down"] + ["down"] * 5
    assert settle_lags(late, TRUTH, CHANGES) == [4, None]  # "down" settles at its 5th frame; "left" never


def test_clean_frames_are_those_whose_window_lies_in_one_leg() -> None:
    t = 3  # windows of 3 frames: a leg of 5 frames has 3 clean ones
    online = list(TRUTH)
    offline = list(TRUTH)
    online[8] = "up"  # a clean frame of the "down" leg: wrong, and disagrees
    offline[6] = "right"  # a transition frame: the offline model turns later
    score = score_shot(online, offline, _path(), t)
    assert score.clean_accuracy == pytest.approx(8 / 9)
    assert score.clean_agreement == pytest.approx(8 / 9)
    assert score.agreement == pytest.approx(12 / 14)  # frames 2..15 have 3 frames behind them
    assert score.lags == [3, 0]


def test_bench_online_runs_models_through_watch_and_saves_its_figures(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "online",
            "--model",
            "tsm-motion-mnv2-32px",
            "--paths",
            "1",
            "--legs",
            "3",
            "--out",
            str(tmp_path),
        ],
        env={"COLUMNS": "250"},
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "online.json").read_text())
    (entry,) = report["models"]
    assert entry["shift"] == "bi" and entry["changes"] == 2 == report["offline_reference"]["changes"]
    assert len(entry["lags"]) == 2 and entry["latency_ms"]["p50"] > 0 and entry["cpu_ms"]["p50"] > 0
    assert 0 <= entry["clean_accuracy"] <= 1 and "online (bi-directional)" in result.output
