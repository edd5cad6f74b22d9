"""The sampling bench's machinery on a small generated video (figures come from `tsmindex bench sampling`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from workers.benchmarks.sampling import FootageSpec, agreement, generated_files, to_json, window_labels
from workers.inference import InProcessEngine
from workers.media import probe
from workers.training.shipped import SHIPPED_MODEL


def test_agreement_on_generated_footage(tmp_path: Path) -> None:
    spec = FootageSpec("tiny", 192, 108, gop=30, videos=1, seconds=10.0)
    files = generated_files(spec, tmp_path, on_step=lambda _s: None)
    assert files == [(tmp_path / spec.filename(0), window_labels(spec, 0))]
    info = probe(files[0][0])
    assert (info.width, info.height, info.frame_count) == (192, 108, 300)
    assert info.keyframes == tuple(range(0, 300, 30))  # fixed 1 s GOPs, like a phone

    engine = InProcessEngine.from_checkpoint(SHIPPED_MODEL, device="cpu")
    pre = engine.model.card.preprocess

    def classify(clips: list[np.ndarray]) -> list[list[tuple[str, float]]]:
        return [[(x.label, x.score) for x in p.labels] for p in engine.classify(clips, top_k=4)]

    row = agreement(spec.name, files, classify, resize=pre.resize, crop=pre.crop)
    assert (row.files, row.windows) == (1, 1)
    # 10 s windows, 8 segments of 37.5 frames, a keyframe every 30 frames: every segment has one.
    assert row.keyframe_picks == 1.0
    assert row.exact_accuracy == 1.0  # the shipped model sees each window's true motion
    assert row.top5_agreement == 1.0  # four classes: the top five are all of them
    saved = json.loads(json.dumps(to_json([row], model="m")))
    assert saved["rows"][0]["windows"] == 1
