from __future__ import annotations

import csv
import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from workers.training.datasets import decode_clip
from workers.training.motion import (
    DIRECTION_CLASSES,
    MOTION_CLASSES,
    MotionSpec,
    draw_tracks,
    make_motion_dataset,
    make_stream_dataset,
    render_clip,
    render_path,
)

OPPOSITES = [("left", "right"), ("up", "down"), ("approach", "recede")]


@pytest.mark.parametrize(("a", "b"), OPPOSITES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_opposite_classes_are_the_same_frames_played_backwards(a: str, b: str, seed: int) -> None:
    # The property TSN cannot beat: a clip and its opposite hold the very same frames.
    clip_a = render_clip(a, np.random.default_rng(seed), size=32, frames=8)
    clip_b = render_clip(b, np.random.default_rng(seed), size=32, frames=8)
    np.testing.assert_array_equal(clip_a, clip_b[::-1])
    assert not np.array_equal(clip_a[0], clip_a[-1])


@pytest.mark.parametrize(
    ("label", "moving", "sign"),
    [
        ("left", "x", -1),
        ("right", "x", 1),
        ("up", "y", -1),
        ("down", "y", 1),
        ("approach", "side", 1),
        ("recede", "side", -1),
        ("static", None, 0),
    ],
)
def test_each_class_moves_only_its_own_parameter(label: str, moving: str | None, sign: int) -> None:
    for seed in range(20):
        tracks = draw_tracks(label, np.random.default_rng(seed), size=64, frames=8)
        for name, values in tracks.items():
            steps = np.diff(values)
            if name == moving:
                assert np.all(sign * steps > 0)
                np.testing.assert_allclose(steps, steps[0])  # constant speed
            else:
                np.testing.assert_array_equal(steps, 0.0)
        assert np.all((tracks["x"] >= 0.2 * 64) & (tracks["x"] <= 0.8 * 64))
        assert np.all((tracks["side"] >= 0.18 * 64) & (tracks["side"] <= 0.42 * 64))


def test_static_clip_does_not_change() -> None:
    clip = render_clip("static", np.random.default_rng(3), size=32, frames=8)
    for frame in clip[1:]:
        np.testing.assert_array_equal(frame, clip[0])


def test_spec_rejects_unknown_classes_and_odd_sizes() -> None:
    with pytest.raises(ValueError, match="unknown motion classes"):
        MotionSpec(classes=("left", "spin"))
    with pytest.raises(ValueError, match="even"):
        MotionSpec(size=33)


def test_dataset_is_balanced_decodable_and_reproducible(tmp_path: Path) -> None:
    spec = MotionSpec(classes=MOTION_CLASSES, size=32, frames=8, fps=8)
    labels = make_motion_dataset(tmp_path / "a", count=14, seed=5, spec=spec)
    with labels.open() as fh:
        rows = list(csv.DictReader(fh))
    assert Counter(r["label"] for r in rows) == {c: 2 for c in MOTION_CLASSES}
    for row in rows:
        assert (tmp_path / "a" / row["path"]).parent.name == row["label"]

    first = tmp_path / "a" / rows[0]["path"]
    frames = decode_clip(first, resize=32, pick=np.arange)
    assert frames.shape == (8, 32, 32, 3)

    again = make_motion_dataset(tmp_path / "b", count=14, seed=5, spec=spec)
    assert again.read_text() == labels.read_text()
    same = decode_clip(tmp_path / "b" / rows[0]["path"], resize=32, pick=np.arange)
    np.testing.assert_array_equal(same, frames)
    for row in rows:  # the same bytes, not only the same first clip
        assert (tmp_path / "b" / row["path"]).read_bytes() == (tmp_path / "a" / row["path"]).read_bytes()

    other = make_motion_dataset(tmp_path / "c", count=14, seed=6, spec=spec)
    with other.open() as fh:
        other_rows = list(csv.DictReader(fh))
    assert any(
        not np.array_equal(
            decode_clip(tmp_path / "a" / a["path"], resize=32, pick=np.arange),
            decode_clip(tmp_path / "c" / b["path"], resize=32, pick=np.arange),
        )
        for a, b in zip(rows, other_rows, strict=True)
        if a["label"] == b["label"]
    )


def test_direction_classes_are_the_default() -> None:
    assert MotionSpec().classes == DIRECTION_CLASSES == ("left", "right", "up", "down")


STEPS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_path_moves_each_leg_one_way_and_turns_between_legs(seed: int) -> None:
    path = render_path(np.random.default_rng(seed), size=32, legs=6)
    assert path.frames.shape == (len(path.labels), 32, 32, 3) and path.changes[0] == 1
    moves = np.diff(path.centres, axis=0)
    for f in range(1, len(path.labels)):
        direction = np.sign(np.round(moves[f - 1], 6))
        assert tuple(direction) == STEPS[path.labels[f]]
    legs = [path.labels[c] for c in path.changes]
    assert all(a != b for a, b in itertools.pairwise(legs))  # every change is a change
    assert np.all((path.centres >= 0.2 * 32 - 1e-9) & (path.centres <= 0.8 * 32 + 1e-9))
    leg_lengths = np.diff([*path.changes, len(path.labels)])
    assert len(set(leg_lengths)) == 1 and 13 <= leg_lengths[0] <= 16
    # Windows whose last 8 frames lie in one leg, with 8 frames of context before them.
    for label, ends in path.window_ends(8, 16):
        for end in ends:
            assert end >= 15 and set(path.labels[end - 7 : end + 1]) == {label}


def test_stream_windows_are_balanced_and_as_long_as_asked(tmp_path: Path) -> None:
    spec = MotionSpec(classes=DIRECTION_CLASSES, size=32, frames=4)
    labels = make_stream_dataset(tmp_path / "a", count=9, seed=3, spec=spec, context=4)
    with labels.open() as fh:
        rows = list(csv.DictReader(fh))
    assert Counter(r["label"] for r in rows) == {"left": 3, "right": 2, "up": 2, "down": 2}
    frames = decode_clip(tmp_path / "a" / rows[0]["path"], resize=32, pick=np.arange)
    assert frames.shape == (8, 32, 32, 3)
    again = make_stream_dataset(tmp_path / "b", count=9, seed=3, spec=spec, context=4)
    assert again.read_text() == labels.read_text()
    with pytest.raises(ValueError, match="four direction classes"):
        make_stream_dataset(tmp_path / "c", count=4, seed=3, spec=MotionSpec(classes=("left", "right")))
