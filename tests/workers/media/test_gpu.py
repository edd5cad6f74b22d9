"""The GPU decode path: its tensor frame preparation matches swscale's (checked on the CPU, where it
runs the same code), CPU fallbacks without CUDA, and NVDEC itself where a GPU is present."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from workers.cli import app
from workers.media import sample_clips
from workers.media.decode import make_converter
from workers.media.gpu import cuda_decode_available, hwaccel_for, make_tensor_converter
from workers.media.synth import make_video

needs_cuda = pytest.mark.skipif(not cuda_decode_available(), reason="needs a GPU and PyAV's CUDA device")


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("gpu") / "v.mp4", frames=16, fps=8, size=(320, 180), grain=6)


def _first_frame(path: Path) -> av.VideoFrame:
    with av.open(str(path)) as container:
        return next(container.decode(video=0))


def test_tensor_frames_match_swscale_within_interpolation_noise(video: Path) -> None:
    frame = _first_frame(video)
    want = make_converter(resize=128, crop=112)(frame)
    got = make_tensor_converter(resize=128, crop=112, device="cpu")(frame)
    assert got.shape == want.shape == (112, 112, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(np.int16) - want).mean() < 3.0  # measured 1.98 levels of 255


def test_tensor_frames_turn_upright_like_the_cpu_path(video: Path) -> None:
    frame = _first_frame(video)
    upright = make_tensor_converter(resize=128, crop=112, device="cpu")(frame)
    turned = make_tensor_converter(resize=128, crop=112, rotation=90, device="cpu")(frame)
    np.testing.assert_array_equal(turned, np.rot90(upright, 1))
    with pytest.raises(ValueError, match="crop must not be larger"):
        make_tensor_converter(resize=100, crop=112, device="cpu")


def test_odd_sized_frames_take_the_swscale_path(tmp_path: Path) -> None:
    frame = _first_frame(make_video(tmp_path / "odd.mkv", frames=2, size=(161, 121), codec="ffv1"))
    got = make_tensor_converter(resize=64, crop=64, device="cpu")(frame)
    np.testing.assert_array_equal(got, make_converter(resize=64, crop=64)(frame))


@pytest.mark.skipif(cuda_decode_available(), reason="checks the fallback of hosts without CUDA")
def test_without_cuda_a_cuda_request_decodes_on_the_cpu(video: Path) -> None:
    assert hwaccel_for("cuda") is None and hwaccel_for("cpu") is None
    on_cpu = sample_clips(video, window_s=2.0, resize=64, crop=64)
    asked_cuda = sample_clips(video, window_s=2.0, resize=64, crop=64, device="cuda")
    for a, b in zip(on_cpu.clips, asked_cuda.clips, strict=True):
        np.testing.assert_array_equal(a.frames, b.frames)
    result = CliRunner().invoke(
        app, ["bench", "decode", "--device", "cuda", "--no-corpus", "--video", "720p-gop30"]
    )
    assert result.exit_code == 2 and "no CUDA decode here" in result.output


@needs_cuda
def test_nvdec_and_gpu_resize_give_the_cpu_clips(video: Path) -> None:
    assert torch.cuda.is_available() and hwaccel_for("cuda") is not None
    on_cpu = sample_clips(video, window_s=2.0, resize=128, crop=112)
    on_gpu = sample_clips(video, window_s=2.0, resize=128, crop=112, device="cuda")
    assert [c.frame_indices for c in on_gpu.clips] == [c.frame_indices for c in on_cpu.clips]
    for a, b in zip(on_cpu.clips, on_gpu.clips, strict=True):
        assert np.abs(a.frames.astype(np.int16) - b.frames).mean() < 3.0
