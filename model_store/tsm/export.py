"""Fast inference paths (precision policy, channels_last, inference mode, torch.compile) and ONNX export."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from model_store.tsm.network import TSM

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_supports_bf16(flags: Iterable[str] | None = None) -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere oneDNN emulates it,
    slower than fp32."""
    return bool({"avx512_bf16", "amx_bf16"} & set(_cpu_flags() if flags is None else flags))


def select_dtype(
    device: torch.device, precision: str = "auto", *, cpu_bf16: bool | None = None
) -> torch.dtype:
    """The compute dtype: fp16 on CUDA, bf16 on CPUs that support it natively, else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    if precision != "auto":
        dtype = _DTYPES[precision]
        if device.type == "cpu" and dtype == torch.float16:
            raise ValueError("fp16 is a CUDA path; use bf16 or fp32 on CPU")
        return dtype
    if device.type == "cuda":
        return torch.float16
    if cpu_bf16 is None:
        cpu_bf16 = cpu_supports_bf16()
    return torch.bfloat16 if cpu_bf16 else torch.float32


@dataclass
class InferenceRunner:
    """Calls a prepared TSM: float [N, T, 3, H, W] -> (logits [N, K], embedding [N, D]) in fp32."""

    model: TSM
    device: torch.device
    dtype: torch.dtype
    forward: Callable[[Tensor], tuple[Tensor, Tensor]]

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        autocast = self.dtype != torch.float32
        with (
            torch.inference_mode(),
            torch.autocast(device_type=self.device.type, dtype=self.dtype, enabled=autocast),
        ):
            logits, embedding = self.forward(x.to(self.device, non_blocking=True))
        return logits.float(), embedding.float()


def prepare_for_inference(
    model: TSM,
    *,
    device: str | torch.device | None = None,
    precision: str = "auto",
    channels_last: bool = True,
    compile: bool = False,
) -> InferenceRunner:
    """Put ``model`` in eval mode on ``device`` (CUDA when present) with channels_last weights.

    Weights stay fp32 and autocast picks the compute dtype (``select_dtype``): it keeps BatchNorm
    and the softmax-facing head numerically safe. channels_last lets oneDNN/cuDNN run the
    convolutions without layout reorders; the shift keeps that layout.
    """
    dev = torch.device(device) if device is not None else _default_device()
    dtype = select_dtype(dev, precision)
    model.eval().to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    forward: Callable[[Tensor], tuple[Tensor, Tensor]] = model.forward_features
    if compile:
        forward = torch.compile(model.forward_features)
    return InferenceRunner(model=model, device=dev, dtype=dtype, forward=forward)


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class _Features(nn.Module):
    def __init__(self, model: TSM) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.forward_features(x)


def _example(model: TSM, height: int, width: int) -> Tensor:
    param = next(model.parameters())
    shape = (2, model.config.num_segments, 3, height, width)
    return torch.zeros(shape, dtype=param.dtype, device=param.device)


def export_torchscript(model: TSM, path: str | Path, *, height: int = 224, width: int = 224) -> Path:
    """Trace ``clips`` [batch, T, 3, H, W] -> (logits, embedding) to a TorchScript file.

    Traced at batch 2: the shift reads the batch from the input's shape, so other batch sizes give
    the same results (check them, as ``tsmindex export`` does). TorchScript is deprecated upstream
    in favour of torch.export; ONNX is the portable target.
    """
    import warnings

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # the deprecation notice
        # The input-shape checks run once at trace time; the parity check covers other shapes.
        warnings.filterwarnings("ignore", message="Converting a tensor to a Python boolean")
        traced = torch.jit.trace(_Features(model).eval(), (_example(model, height, width),))  # type: ignore[no-untyped-call]
        torch.jit.save(traced, str(path))
    return path


def export_onnx(
    model: TSM, path: str | Path, *, height: int = 224, width: int = 224, opset: int = 18
) -> Path:
    """Export ``clips`` [batch, T, 3, H, W] -> (``logits``, ``embedding``) with a dynamic batch.

    Exported through torch.export, so shapes stay symbolic: a graph traced at one batch size
    computes the same shift at any other (needs the ``onnx`` extra: onnx + onnxscript).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _Features(model).eval()
    example = _example(model, height, width)
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        wrapper,
        (example,),
        str(path),
        input_names=["clips"],
        output_names=["logits", "embedding"],
        dynamic_shapes={"x": {0: batch}},
        opset_version=opset,
        dynamo=True,
    )
    return path
