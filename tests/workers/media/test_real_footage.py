"""Exact sampling on real files nobody here made (``tsmindex corpus fetch``), against a plain full decode.

Frame ``i`` of a video is the ``i``-th frame ``container.decode`` puts out: every sampled frame must be
pixel-equal to it, in exact and in keyframe sampling, with one window over the whole file and with
the default windows. The corpus comes from Debian and PyPI packages; in CI (``CI=true``) a corpus
that cannot be fetched fails the run instead of skipping these tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest

from services.core.config import Settings
from workers.media import SampledVideo, Sampling, probe, sample_clips
from workers.media.corpus import CorpusError, CorpusFile, fetch, load_manifest
from workers.media.decode import make_converter

CORPUS_NAMES = [entry["name"] for entry in load_manifest()["files"]]


@pytest.fixture(scope="session")
def corpus() -> dict[str, CorpusFile]:
    directory = Settings(_env_file=None).corpus_dir  # type: ignore[call-arg]
    try:
        files = fetch(directory)
    except CorpusError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the real-footage corpus could not be fetched: {exc}")
        pytest.skip(f"the real-footage corpus could not be fetched: {exc}")
    return {item.name: item for item in files}


def full_decode(path: Path, indices: set[int], rotation: int) -> dict[int, np.ndarray]:
    """The frames at output positions ``indices`` of a plain decode of every frame, as the sampler
    converts them (shorter side 256, centre crop 224, upright)."""
    convert = make_converter(resize=256, crop=224, rotation=rotation)
    with av.open(str(path)) as container:
        return {i: convert(frame) for i, frame in enumerate(container.decode(video=0)) if i in indices}


def mismatches(result: SampledVideo, reference: dict[int, np.ndarray]) -> list[tuple[int, int]]:
    """(window, frame index) of every sampled frame that differs from the full decode's."""
    return [
        (window, index)
        for window, clip in enumerate(result.clips)
        for frame, index in zip(clip.frames, clip.frame_indices, strict=True)
        if index not in reference or not np.array_equal(frame, reference[index])
    ]


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_sampled_frames_equal_a_full_decode(corpus: dict[str, CorpusFile], name: str) -> None:
    path = corpus[name].path
    info = probe(path)
    plans: tuple[tuple[Sampling, float], ...] = (("exact", 3600.0), ("exact", 10.0), ("keyframe", 10.0))
    results = {
        (sampling, window_s): sample_clips(path, num_segments=8, window_s=window_s, sampling=sampling)
        for sampling, window_s in plans
    }
    reference = full_decode(
        path, {i for r in results.values() for c in r.clips for i in c.frame_indices}, info.rotation
    )
    assert len(reference) > 0
    for (sampling, window_s), result in results.items():
        assert result.shortfalls == (), (sampling, window_s)
        assert mismatches(result, reference) == [], (sampling, window_s)
    whole = results[("exact", 3600.0)]
    assert len(whole.clips) == 1
    # One window over the file: the TSN centres of every frame the file has.
    n = info.frame_count
    assert whole.clips[0].frame_indices == tuple(int((i + 0.5) * n / 8) for i in range(8))


def test_packed_b_frame_avi_gives_frame_16_not_50(corpus: dict[str, CorpusFile]) -> None:
    """The issue's case: segment 0 of Megamind.avi (270 frames) is frame 16 of a full decode."""
    for name in ("Megamind.avi", "Megamind_bugy.avi"):
        path = corpus[name].path
        result = sample_clips(path, num_segments=8, window_s=3600)
        assert result.clips[0].frame_indices == (16, 50, 84, 118, 151, 185, 219, 253)
        assert mismatches(result, full_decode(path, set(result.clips[0].frame_indices), 0)) == []
