"""int8 inference on x86 CPUs: a statically quantized ONNX graph of the TSM run by ONNX Runtime.

Opt-in (precision "int8"), never picked by "auto": `tsmindex bench int8` measures its agreement with
fp32 and its speed against our bf16 path, and README "int8 on CPU" has the figures. Ships inside the
``.mar``; ONNX Runtime (the ``onnx`` extra) is imported only when an int8 model is loaded, so the
fp32/bf16/fp16 paths keep needing nothing beyond torch and numpy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

INT8_FILE = "model-int8.onnx"  # its name inside a model archive
INPUT_NAME = "clips"  # the input and output names of model_store.tsm.export_onnx
OUTPUT_NAMES = ("logits", "embedding")


class Int8Unavailable(RuntimeError):
    """The int8 path cannot run here (no ONNX Runtime, or no int8 model file)."""


def _session_options(threads: int | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Same thread count as torch's intra-op pool, so that switching precision changes nothing else.
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # ONNX Runtime's own spinning threads fight decode processes for the cores (README "Threads").
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class Int8Network:
    """Calls an int8 ONNX graph as ``TSM.forward_features``: [N, T, 3, H, W] -> (logits, embedding)."""

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise Int8Unavailable(f"no int8 model at {self.path}")
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise Int8Unavailable("int8 inference needs onnxruntime (pip install 'tsmindex[onnx]')") from exc
        self.session = ort.InferenceSession(
            os.fspath(self.path), _session_options(threads), providers=["CPUExecutionProvider"]
        )
        self.embedding_dim = int(self.session.get_outputs()[1].shape[1])

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feed = {INPUT_NAME: np.ascontiguousarray(x.detach().float().cpu().numpy())}
        logits, embedding = self.session.run(list(OUTPUT_NAMES), feed)
        return torch.from_numpy(logits), torch.from_numpy(embedding)
