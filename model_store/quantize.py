"""Post-training static int8 quantization of a TSM for x86 CPUs (ONNX Runtime, QDQ format).

The network is exported to ONNX (``export_onnx``), then ONNX Runtime inserts quantize/dequantize
pairs: weights int8 per output channel, activations uint8 per tensor with ranges observed on the
calibration clips the user supplies. Those clips pass through ``ClipModel.preprocess``, the same
normalisation the served path applies. Build-time only: not shipped inside the archive.

PyTorch's PT2E flow (X86InductorQuantizer) lives in torchao from torch 2.10 on and is not a
dependency here; README "int8 on CPU" says why ONNX Runtime was chosen.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_store.inference import ClipModel, ClipRejected
from model_store.int8 import INPUT_NAME
from model_store.tsm import TSM, ModelCard, export_onnx

CALIBRATION_BATCH = 1  # clips per calibration run: the calibrator's memory grows with it


class QuantizationError(ValueError):
    """The model cannot be quantized as asked (no calibration clips, wrong clip shape)."""


def _reader(fp32: ClipModel, clips: Sequence[np.ndarray]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no type hints
        def __init__(self) -> None:
            self.starts = iter(range(0, len(clips), CALIBRATION_BATCH))

        def get_next(self) -> dict[str, np.ndarray] | None:
            start = next(self.starts, None)
            if start is None:
                return None
            batch = clips[start : start + CALIBRATION_BATCH]
            return {INPUT_NAME: fp32.preprocess(batch).cpu().numpy()}

    return Reader()


def quantize_int8(
    model: TSM,
    card: ModelCard,
    calibration: Iterable[np.ndarray],
    out: str | Path,
) -> Path:
    """Write the int8 ONNX graph of ``model`` to ``out``, calibrated on uint8 clips [T, H, W, 3].

    A few dozen clips like the ones to be indexed are enough: only activation ranges are learnt.
    ONNX Runtime's calibrator holds every activation of a clip at once: a ResNet-50 clip needs
    3.7 GB at 112 px and more than 9 GB at 224 px, so calibrate the big model on a big host.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fp32 = ClipModel(model, card, device="cpu", precision="fp32")
    try:
        clips = [fp32.validate(c) for c in calibration]
    except ClipRejected as exc:
        raise QuantizationError(f"calibration clip: {exc.message}") from exc
    if not clips:
        raise QuantizationError("no calibration clips: give at least one video long enough for a clip")
    crop = card.preprocess.crop
    with tempfile.TemporaryDirectory(prefix="tsm-int8-") as tmp:
        exported = export_onnx(model, Path(tmp) / "fp32.onnx", height=crop, width=crop)
        # One self-contained file: the exporter keeps large weights beside the graph.
        single = Path(tmp) / "fp32-single.onnx"
        onnx.save(onnx.load(str(exported)), str(single))
        quantize_static(
            str(single),
            str(out),
            _reader(fp32, clips),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    return out
