"""The decode benchmark's machinery on a tiny clip (the real figures come from `tsmindex bench decode`)."""

from __future__ import annotations

import json
from pathlib import Path

from workers.benchmarks.decode import BenchVideo, ensure_video, measure, write_json


def test_measure_compares_identical_frames(tmp_path: Path) -> None:
    spec = BenchVideo("tiny", "libx264", 96, 64, seconds=4.0, gop=10)
    path = ensure_video(spec, tmp_path)
    assert ensure_video(spec, tmp_path) == path  # cached, not re-encoded
    row = measure(spec.name, path, repeats=1, window_s=2.0, resize=64, crop=64)
    assert (row.frames, row.clips, row.naive_frames_decoded, row.targets) == (120, 2, 120, 16)
    assert row.exact_frames_equal and row.keyframe_frames_equal
    assert 0 < row.keyframe_frames_decoded < row.exact_frames_decoded < 120
    # 2 s windows, 8 segments of 7.5 frames, a keyframe every 10 frames: 6 of 8 segments hold one.
    assert row.keyframe_picks == 12
    assert row.seeks > 0
    out = tmp_path / "decode.json"
    write_json([row], out, repeats=1)
    saved = json.loads(out.read_text())
    assert saved["rows"][0]["video"] == "tiny"
    assert saved["rows"][0]["exact_frames_equal"] is True
    assert saved["rows"][0]["keyframe_speedup"] > 0
