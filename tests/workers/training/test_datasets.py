from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model_store.tsm import Preprocess
from workers.media import sample_clips
from workers.media import segment_indices as media_segment_indices
from workers.training.datasets import (
    DatasetError,
    LabelledVideos,
    VideoClips,
    VideoSample,
    load_samples,
    multi_scale_crop,
    normalise,
    segment_indices,
)
from workers.training.motion import MotionSpec, make_motion_dataset, render_clip, write_video


@pytest.fixture(scope="module")
def motion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("motion")
    return make_motion_dataset(root, count=8, seed=3, spec=MotionSpec(size=32, frames=8))


@pytest.mark.parametrize("n", [1, 3, 8, 9, 16, 250])
def test_test_time_sampling_is_the_media_pipeline_rule(n: int) -> None:
    assert tuple(segment_indices(n, 8).tolist()) == media_segment_indices(n, 8)


@pytest.mark.parametrize("n", [5, 8, 16, 33])
def test_training_sampling_takes_one_frame_inside_each_segment(n: int) -> None:
    rng = np.random.default_rng(0)
    seen: set[tuple[int, ...]] = set()
    for _ in range(50):
        picked = segment_indices(n, 8, rng)
        assert len(picked) == 8
        for i, index in enumerate(picked):
            assert int(np.floor(i * n / 8)) <= index < max(int(np.ceil((i + 1) * n / 8)), int(i * n / 8) + 1)
            assert index < n
        seen.add(tuple(picked.tolist()))
    assert (len(seen) > 1) == (n > 8 or n % 8 != 0)


def test_folder_csv_and_jsonl_give_the_same_samples(motion: Path, tmp_path: Path) -> None:
    from_csv = load_samples(motion)
    from_folder = load_samples(motion.parent)
    assert from_csv.classes == from_folder.classes == ("down", "left", "right", "up")
    assert sorted(from_csv.samples, key=lambda s: s.path) == sorted(from_folder.samples, key=lambda s: s.path)

    jsonl = tmp_path / "set.jsonl"
    jsonl.write_text(
        "\n".join(
            json.dumps({"path": str(s.path), "label": from_csv.classes[s.label]}) for s in from_csv.samples
        )
        + "\n"
    )
    assert load_samples(jsonl).samples == from_csv.samples

    fixed = load_samples(motion, classes=("left", "right", "up", "down"))
    assert [fixed.classes[s.label] for s in fixed.samples] == [
        from_csv.classes[s.label] for s in from_csv.samples
    ]


def test_bad_dataset_descriptions_are_refused(motion: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="labels not in the class list"):
        load_samples(motion, classes=("left", "right"))
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\na.mp4,x\n")
    with pytest.raises(DatasetError, match="header"):
        load_samples(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("path,label\n")
    with pytest.raises(DatasetError, match="no videos"):
        load_samples(empty)
    with pytest.raises(DatasetError, match="expected a folder"):
        load_samples(tmp_path / "x.txt")


@pytest.mark.parametrize(("size", "resize", "crop"), [(32, 32, 32), (48, 40, 32), (32, 48, 40)])
def test_test_time_frames_are_the_pixels_sample_clips_gives(
    tmp_path: Path, size: int, resize: int, crop: int
) -> None:
    # The shipped model is only right at inference if it saw at training time what the indexer feeds it.
    path = tmp_path / "clip.mp4"
    write_video(path, render_clip("up", np.random.default_rng(1), size=size, frames=16), fps=8)
    labelled = LabelledVideos((VideoSample(path, 0),), ("up",))
    pre = Preprocess(resize=resize, crop=crop)
    ours = VideoClips(labelled, num_segments=8, preprocess=pre, train=False)[0][0].numpy()
    sampled = sample_clips(path, num_segments=8, resize=resize, crop=crop)
    assert len(sampled.clips) == 1
    assert ours.shape == (8, crop, crop, 3)
    np.testing.assert_array_equal(ours, sampled.clips[0].frames)


def test_training_clips_are_random_per_epoch_but_reproducible(motion: Path) -> None:
    videos = load_samples(motion)
    pre = Preprocess(resize=32, crop=28)
    clips = VideoClips(videos, num_segments=4, preprocess=pre, train=True, scales=(1.0, 0.875, 0.75), seed=1)
    a = clips[0][0]
    assert a.shape == (4, 28, 28, 3) and a.dtype == torch.uint8
    assert torch.equal(a, clips[0][0])
    draws = set()
    for epoch in range(6):
        clips.set_epoch(epoch)
        draws.add(clips[0][0].numpy().tobytes())
    assert len(draws) > 1


def test_multi_scale_crop_keeps_one_window_for_all_frames() -> None:
    frames = np.zeros((3, 40, 60, 3), dtype=np.uint8)
    frames[:, :, :, 0] = np.arange(60, dtype=np.uint8)[None, None, :]  # x position in the red channel
    out = multi_scale_crop(frames, 40, (1.0,), np.random.default_rng(0))
    assert out.shape == (3, 40, 40, 3)
    left = int(out[0, 0, 0, 0])
    for f in out:
        np.testing.assert_array_equal(f[0, :, 0], np.arange(left, left + 40))


def test_normalise_layout_and_values() -> None:
    batch = torch.full((2, 3, 4, 5, 3), 255, dtype=torch.uint8)
    x = normalise(batch, Preprocess())
    assert x.shape == (2, 3, 3, 4, 5)
    expected = (1 - torch.tensor(Preprocess().mean)) / torch.tensor(Preprocess().std)
    torch.testing.assert_close(x[0, 0, :, 0, 0], expected)
