"""The decode benchmark's machinery on a tiny clip (the real figures come from `tsmindex bench decode`)."""

from __future__ import annotations

import json
from pathlib import Path

from workers.benchmarks.decode import BenchVideo, ensure_video, measure, write_json


def test_measure_compares_identical_frames(tmp_path: Path) -> None:
    spec = BenchVideo("tiny", "libx264", 96, 64, seconds=4.0, gop=10)
    path = ensure_video(spec, tmp_path)
    assert ensure_video(spec, tmp_path) == path  # cached, not re-encoded
    row = measure(spec, path, repeats=1, window_s=2.0, resize=64, crop=64)
    assert (row.frames, row.clips, row.naive_frames_decoded) == (120, 2, 120)
    assert row.frames_exact
    assert 0 < row.ours_frames_decoded < 120
    assert row.seeks > 0
    out = tmp_path / "decode.json"
    write_json([row], out, repeats=1)
    saved = json.loads(out.read_text())
    assert saved["rows"][0]["video"] == "tiny"
    assert saved["rows"][0]["frames_exact"] is True
