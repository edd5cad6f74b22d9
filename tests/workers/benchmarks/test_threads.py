"""`bench threads`: the grid of core splits, and one measured split with real decode and inference
processes (tiny video and network)."""

from __future__ import annotations

from pathlib import Path

from workers.benchmarks.threads import ThreadBenchConfig, ThreadConfig, default_configs, measure
from workers.media.synth import make_video


def test_the_default_grid_on_two_cores_covers_each_split_and_both_wait_policies() -> None:
    assert default_configs(2) == [
        ThreadConfig(1, 1, "passive"),
        ThreadConfig(1, 2, "passive"),
        ThreadConfig(2, 1, "passive"),
        ThreadConfig(2, 2, "passive"),
        ThreadConfig(2, 2, "active"),
        ThreadConfig(1, 2, "active"),
    ]
    assert ThreadConfig(1, 4, "active") in default_configs(4)
    assert ThreadConfig(2, 2, "passive") in default_configs(4)


def test_one_split_reports_both_stages_and_the_pipeline_runs_at_the_slower(tmp_path: Path) -> None:
    video = make_video(tmp_path / "v.mp4", frames=24, fps=8, size=(64, 48))
    config = ThreadBenchConfig(seconds=1.0, arch="resnet18", size=32, batch=2)
    row = measure(config, ThreadConfig(1, 1, "passive"), video, setup_s=0.0)
    assert row["decoders"] == 1 and row["threads"] == 1 and row["wait_policy"] == "passive"
    assert row["decode_clips_per_s"] > 0 and row["inference_clips_per_s"] > 0
    assert row["pipeline_clips_per_s"] == min(row["decode_clips_per_s"], row["inference_clips_per_s"])
