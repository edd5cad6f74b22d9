"""Decode on the GPU (NVDEC through PyAV's ``hwaccel``) and prepare frames there.

With ``device="cuda"`` the decoder runs on NVDEC and each sampled frame's raw YUV planes (1.5 bytes
a pixel, the cheapest form to move) are copied to the GPU, where colour conversion, the resize and
the centre crop happen; only the finished uint8 crop comes back, as the compact clip the worker
sends to TorchServe. Where PyAV has no CUDA device or torch no GPU, decoding stays on the CPU, and
the same tensor path runs on any torch device, which is how it is tested without a GPU.
"""

from __future__ import annotations

from typing import Any

import av
import numpy as np
import torch
import torch.nn.functional as F

from workers.media.decode import Converter, make_converter

# Limited-range YCbCr -> RGB (ITU-R BT.601), the matrix swscale applies by default, so both paths
# agree on colour.
_BT601 = ((1.164, 0.0, 1.596), (1.164, -0.392, -0.813), (1.164, 2.017, 0.0))


def cuda_decode_available() -> bool:
    """Whether this PyAV build has a CUDA hardware device type and torch sees a GPU."""
    from av.codec.hwaccel import hwdevices_available

    return "cuda" in hwdevices_available() and torch.cuda.is_available()


def hwaccel_for(device: str) -> Any:
    """The PyAV hardware acceleration for ``device`` ("cuda" or "cuda:N"), or None for the CPU.

    Software fallback stays on: a codec NVDEC lacks (VP9 profile 2, old MPEG-4) still decodes.
    """
    if not device.startswith("cuda") or not cuda_decode_available():
        return None
    from av.codec.hwaccel import HWAccel

    index = device.partition(":")[2] or "0"
    return HWAccel(device_type="cuda", device=index, allow_software_fallback=True)


def _yuv_planes(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y [H, W], U and V [H/2, W/2] of a 4:2:0 frame (any other format is converted first)."""
    if frame.format.name not in ("yuv420p", "yuvj420p"):
        frame = frame.reformat(format="yuv420p")
    packed = frame.to_ndarray()  # [H * 3/2, W]: Y, then U and V one after the other
    h, w = frame.height, frame.width
    chroma = packed[h:].reshape(2, h // 2, w // 2)
    return packed[:h], chroma[0], chroma[1]


def make_tensor_converter(
    *, resize: int, crop: int, rotation: int = 0, device: str | torch.device
) -> Converter:
    """Like ``make_converter`` (shorter side to ``resize``, centre crop, upright) with the pixel work
    done by torch on ``device``. Frames with odd sides go through ``make_converter``."""
    if crop > resize:
        raise ValueError("crop must not be larger than resize")
    dev = torch.device(device)
    matrix = torch.tensor(_BT601, device=dev)
    quarter_turns = rotation // 90 % 4
    fallback = make_converter(resize=resize, crop=crop, rotation=rotation)

    def convert(frame: av.VideoFrame) -> np.ndarray:
        height, width = frame.height, frame.width
        if height % 2 or width % 2:
            return fallback(frame)
        y, u, v = (
            torch.from_numpy(np.ascontiguousarray(p)).to(dev, non_blocking=True) for p in _yuv_planes(frame)
        )
        chroma = torch.stack((u, v)).float()[None]  # [1, 2, H/2, W/2]
        chroma = F.interpolate(chroma, size=(height, width), mode="nearest")[0] - 128.0
        yuv = torch.cat(((y.float() - 16.0)[None], chroma))  # [3, H, W]
        rgb = torch.einsum("ij,jhw->ihw", matrix, yuv)
        scale = resize / min(width, height)
        out_h, out_w = max(crop, round(height * scale)), max(crop, round(width * scale))
        rgb = F.interpolate(rgb[None], size=(out_h, out_w), mode="bilinear", antialias=True)[0]
        if quarter_turns:
            rgb = torch.rot90(rgb, quarter_turns, dims=(1, 2))
        top, left = (rgb.shape[1] - crop) // 2, (rgb.shape[2] - crop) // 2
        rgb = rgb[:, top : top + crop, left : left + crop]
        image = rgb.clamp_(0.0, 255.0).round_().to(torch.uint8).permute(1, 2, 0)  # [crop, crop, 3]
        return np.ascontiguousarray(image.cpu().numpy())

    return convert
