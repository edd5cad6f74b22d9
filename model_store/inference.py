"""Clip inference: the one preprocess -> forward -> postprocess path.

The TorchServe handler and the in-process engine both call ``ClipModel``, so the served and the
embedded paths give the same labels for the same clip. Ships inside the ``.mar``: imports only
torch, numpy, the standard library and ``model_store.tsm``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from model_store.int8 import Int8Network
from model_store.tsm import TSM, ModelCard, load_model, read_card

# "int8" is opt-in (model_store.int8): "auto" picks among the float precisions only.
Precision = Literal["auto", "fp32", "fp16", "bf16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("auto", "fp32", "fp16", "bf16", "int8")

GPU_BATCH_SIZE = 16  # the design's batch size
# `tsmindex bench serve` (ResNet-50, 8x224 clips, bf16, 2 cores shared with other jobs): about
# 0.2 clips/s at batch 1, 0.4 at 4, and 0.4-0.6 at both 8 and 16 (equal within that host's noise).
# 8 keeps that throughput at half the per-batch latency (15-20 s there) and fills more often.
CPU_BATCH_SIZE = 8
NPY_HEADER_SLACK = 4096  # an NPY header is at most a few hundred bytes; anything beyond is not a clip


class ClipRejected(ValueError):
    """A clip that can never be classified: its own 4xx, the rest of its batch goes on."""

    def __init__(self, reason: str, message: str, *, status: int) -> None:
        super().__init__(message)
        self.reason = reason  # short machine code: not_npy, bad_dtype, bad_shape, too_large
        self.status = status
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"reason": self.reason, "message": self.message, "status": self.status}}


def default_batch_size(device: torch.device) -> int:
    return GPU_BATCH_SIZE if device.type == "cuda" else CPU_BATCH_SIZE


def resolve_precision(device: torch.device, precision: Precision = "auto") -> Precision:
    """CUDA runs fp16; a CPU with native bf16 (AVX512-BF16/AMX) runs bf16 autocast; else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "fp16"
    mkldnn = torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
    if device.type == "cpu" and mkldnn and _cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def _cpu_has_native_bf16() -> bool:
    # Emulated bf16 is slower than fp32, so only take it where oneDNN has native kernels.
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class ClipModel:
    """A TSM network with its card: parses, batches, runs and describes clips.

    ``model`` is the torch network, or an :class:`Int8Network` for precision "int8" (CPU only).
    ``compile`` runs the torch network through ``torch.compile`` (Inductor): slower to start,
    often faster on a GPU; off by default.
    """

    def __init__(
        self,
        model: TSM | Int8Network,
        card: ModelCard,
        *,
        device: torch.device | str | None = None,
        precision: Precision = "auto",
        compile: bool = False,
    ) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if isinstance(model, Int8Network) != (precision == "int8"):
            raise ValueError("precision 'int8' goes with an Int8Network, and an Int8Network with it")
        if precision == "int8" and self.device.type != "cpu":
            raise ValueError("int8 is a CPU path; CUDA runs fp16")
        self.precision: Precision = resolve_precision(self.device, precision)
        self.card = card
        self.num_segments = card.config.num_segments
        self.crop = card.preprocess.crop
        self.model: TSM | Int8Network = model if isinstance(model, Int8Network) else self._prepare(model)
        self.compiled = compile and not isinstance(self.model, Int8Network)
        self._forward: Callable[[Tensor], tuple[Tensor, Tensor]] = (
            torch.compile(self.model.forward_features) if self.compiled else self.model.forward_features
        )
        self._mean = torch.tensor(card.preprocess.mean, device=self.device).view(1, 1, 3, 1, 1)
        self._std = torch.tensor(card.preprocess.std, device=self.device).view(1, 1, 3, 1, 1)

    def _prepare(self, model: TSM) -> TSM:
        model = model.eval().to(self.device)
        if self.device.type == "cuda":
            # Frames arrive HWC, so channels_last needs no copy and suits the tensor cores.
            model = model.to(memory_format=torch.channels_last)
        if self.precision == "fp16":
            model = model.half()
        return model

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        card: ModelCard | None = None,
        device: torch.device | str | None = None,
        precision: Precision = "auto",
        int8_model: str | Path | None = None,
        compile: bool = False,
    ) -> ClipModel:
        """The checkpoint's network; with precision "int8", ``int8_model`` (its quantized graph)
        runs instead and the checkpoint only gives the card."""
        if precision == "int8":
            if int8_model is None:
                raise ValueError("precision 'int8' needs the quantized model (`tsmindex model quantize`)")
            return cls(Int8Network(int8_model), card or read_card(path), device="cpu", precision="int8")
        model, card = load_model(path, card=card)
        return cls(model, card, device=device, precision=precision, compile=compile)

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        return (self.num_segments, self.crop, self.crop, 3)

    @property
    def max_request_bytes(self) -> int:
        return int(np.prod(self.clip_shape)) + NPY_HEADER_SLACK

    def parse(self, data: bytes | bytearray) -> np.ndarray:
        """NPY bytes -> a validated clip. Never unpickles."""
        if len(data) > self.max_request_bytes:
            raise ClipRejected(
                "too_large",
                f"clip body is {len(data)} bytes; a {list(self.clip_shape)} uint8 clip needs at most "
                f"{self.max_request_bytes}",
                status=413,
            )
        buffer = io.BytesIO(bytes(data))
        try:
            np.lib.format.read_magic(buffer)
            buffer.seek(0)
            array = np.lib.format.read_array(buffer, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ClipRejected("not_npy", f"body is not a NumPy .npy array: {exc}", status=400) from exc
        return self.validate(array)

    def validate(self, clip: np.ndarray) -> np.ndarray:
        if not isinstance(clip, np.ndarray):
            raise ClipRejected(
                "bad_type", f"clip must be a numpy array, got {type(clip).__name__}", status=422
            )
        if clip.dtype != np.uint8:
            raise ClipRejected("bad_dtype", f"clip dtype must be uint8, got {clip.dtype}", status=422)
        if clip.shape != self.clip_shape:
            raise ClipRejected(
                "bad_shape",
                f"clip shape must be {list(self.clip_shape)} ([T, H, W, 3] RGB), got {list(clip.shape)}",
                status=422,
            )
        return clip

    def preprocess(self, clips: Sequence[np.ndarray]) -> Tensor:
        """Validated uint8 clips [T, H, W, 3] -> normalised input [N, T, 3, H, W]."""
        frames = torch.from_numpy(np.stack(clips)).to(self.device, non_blocking=True)  # [N, T, H, W, 3]
        # The permute keeps HWC memory order, i.e. channels_last for the network's 4-D view.
        x = frames.permute(0, 1, 4, 2, 3).float().div_(255.0)  # [N, T, 3, H, W]
        x = (x - self._mean) / self._std
        return x.half() if self.precision == "fp16" else x

    def infer(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        """Input [N, T, 3, H, W] -> (probabilities [N, K], embeddings [N, D]), float32 on the CPU."""
        with torch.inference_mode(), self._autocast():
            logits, embeddings = self._forward(batch)
        probs = torch.softmax(logits.float(), dim=1)
        return probs.cpu(), embeddings.float().cpu()

    def postprocess(
        self,
        probs: Tensor,
        embeddings: Tensor,
        *,
        top_k: int | Sequence[int] = 5,
        with_embedding: bool | Sequence[bool] = False,
    ) -> list[dict[str, Any]]:
        """Per clip: {"labels": [{label, index, score}], "embedding"?, "model": {name, version}}."""
        n = probs.shape[0]
        ks = [top_k] * n if isinstance(top_k, int) else list(top_k)
        embeds = [with_embedding] * n if isinstance(with_embedding, bool) else list(with_embedding)
        num_classes = probs.shape[1]
        model_info = {"name": self.card.name, "version": self.card.version}
        results: list[dict[str, Any]] = []
        for row in range(n):
            k = max(1, min(ks[row], num_classes))
            scores, indices = torch.topk(probs[row], k)
            result: dict[str, Any] = {
                "labels": [
                    {"label": self.card.classes[i], "index": i, "score": s}
                    for s, i in zip(scores.tolist(), indices.tolist(), strict=True)
                ],
                "model": dict(model_info),
            }
            if embeds[row]:
                result["embedding"] = embeddings[row].tolist()
            results.append(result)
        return results

    def classify(
        self, clips: Sequence[np.ndarray], *, top_k: int = 5, with_embedding: bool = False
    ) -> list[dict[str, Any]]:
        """One batch through the three stages (clips must already be validated)."""
        probs, embeddings = self.infer(self.preprocess(clips))
        return self.postprocess(probs, embeddings, top_k=top_k, with_embedding=with_embedding)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(
            device_type=self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"
        )
