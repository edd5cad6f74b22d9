"""`bench platform` end to end on a tiny network and video: a real TorchServe, a real database, and
the pipeline's figures consistent with the bare parts measured beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.benchmarks.platform import STAGES, PlatformBenchConfig, run
from workers.media.synth import make_video

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_pipeline_indexes_every_clip_and_reports_its_ratio_to_the_bound(tmp_path: Path) -> None:
    videos = tuple(
        make_video(tmp_path / f"v{i}.mp4", frames=48, fps=8, size=(96, 64), gop=8) for i in range(2)
    )
    config = PlatformBenchConfig(
        paths=videos, arch="resnet18", crop=32, num_segments=4, batch_size=2, window_s=1.5, work_dir=tmp_path
    )
    results = run(config, lambda _: None)
    bare, pipeline = results["bare"], results["pipeline"]
    assert bare["clips"] == pipeline["clips"] == 8  # two 6 s videos, four 1.5 s windows each
    assert pipeline["videos"] == pipeline["succeeded"] == 2
    assert set(pipeline["stage_s"]) == set(STAGES) and all(v > 0 for v in pipeline["stage_s"].values())
    assert 0 < pipeline["batch_fill"] <= 1 and 0 < bare["inference_batch_fill"] <= 1
    bound = min(bare["decode_clips_per_s"], bare["inference_clips_per_s"])
    assert results["bound"]["clips_per_s"] == bound
    assert results["ratio_to_bound"] == pytest.approx(pipeline["clips_per_s"] / bound)
    shared = 1 / (1 / bare["decode_clips_per_s"] + 1 / bare["inference_clips_per_s"])
    assert results["ratio_to_shared_cores_bound"] == pytest.approx(pipeline["clips_per_s"] / shared)
