"""Mutated files either decode or raise a MediaError subclass: never another exception, never a hang."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.workers.media.videos import CODEC_EXTENSIONS, make_video, require_encoder
from workers.media import MediaError, sample_clips

_counter = itertools.count()

mutations = st.lists(
    st.tuples(st.floats(min_value=0.0, max_value=1.0, exclude_max=True), st.integers(0, 255)),
    min_size=1,
    max_size=24,
)


@pytest.fixture(scope="module", params=["libx264", "libvpx-vp9"])
def seed_video(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    codec: str = request.param
    require_encoder(codec)
    directory = tmp_path_factory.mktemp(f"fuzz-{codec}")
    return make_video(
        directory / f"seed.{CODEC_EXTENSIONS[codec]}", frames=24, size=(48, 32), codec=codec, gop=6
    )


@settings(
    max_examples=60,
    deadline=10_000,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    mutations=mutations,
    keep=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0)),
)
def test_mutated_file_never_escapes_media_error(
    seed_video: Path, mutations: list[tuple[float, int]], keep: float | None
) -> None:
    data = bytearray(seed_video.read_bytes())
    for where, value in mutations:
        data[int(where * len(data))] = value
    if keep is not None:
        data = data[: int(keep * len(data))]
    path = seed_video.with_name(f"mutant-{next(_counter)}{seed_video.suffix}")
    path.write_bytes(bytes(data))
    try:
        result = sample_clips(path, num_segments=4, resize=32, crop=32, budget_s=5.0)
    except MediaError:
        return
    finally:
        path.unlink()
    for clip in result.clips:
        assert clip.frames.shape == (4, 32, 32, 3)
        assert len(clip.frame_indices) == 4
