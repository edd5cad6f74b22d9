"""Inference paths (precision policy, channels_last) and ONNX export parity with onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from model_store.tsm import TSM, build_tsm
from model_store.tsm.export import (
    cpu_supports_bf16,
    export_onnx,
    prepare_for_inference,
    select_dtype,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

T = 3


def _model() -> TSM:
    torch.manual_seed(0)
    model = build_tsm("resnet18", num_classes=5, num_segments=T)
    nn.init.normal_(model.new_fc.weight, std=0.1)
    return model.eval()


def test_precision_policy() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert select_dtype(cuda) == torch.float16
    assert select_dtype(cpu, cpu_bf16=True) == torch.bfloat16
    assert select_dtype(cpu, cpu_bf16=False) == torch.float32
    assert select_dtype(cpu, "fp32", cpu_bf16=True) == torch.float32
    assert select_dtype(cuda, "bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="fp16 is a CUDA path"):
        select_dtype(cpu, "fp16")
    with pytest.raises(ValueError, match="unknown precision"):
        select_dtype(cpu, "int8")
    assert cpu_supports_bf16(["fpu", "avx2", "avx512_bf16"])
    assert cpu_supports_bf16(["amx_bf16", "amx_tile"])
    assert not cpu_supports_bf16(["fpu", "avx2", "avx512f"])


def test_fp32_runner_matches_eager_and_uses_channels_last() -> None:
    model = _model()
    x = torch.randn(2, T, 3, 32, 32)
    with torch.no_grad():
        want_logits, want_emb = model.forward_features(x)
    runner = prepare_for_inference(model, device="cpu", precision="fp32")
    assert runner.dtype == torch.float32 and runner.device == torch.device("cpu")
    assert model.state_dict()["base_model.conv1.weight"].is_contiguous(memory_format=torch.channels_last)
    logits, emb = runner(x)
    torch.testing.assert_close(logits, want_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(emb, want_emb, rtol=1e-4, atol=1e-4)
    assert not logits.requires_grad


def test_bf16_runner_stays_close_to_fp32() -> None:
    model = _model()
    x = torch.randn(2, T, 3, 32, 32)
    with torch.no_grad():
        want_emb = model.forward_features(x)[1]
    logits, emb = prepare_for_inference(model, device="cpu", precision="bf16")(x)
    assert logits.dtype == emb.dtype == torch.float32
    # bf16 keeps 8 bits of mantissa: agreement to a few percent of the feature scale.
    assert (emb - want_emb).abs().max() < 0.05 * want_emb.abs().max()


def test_onnx_export_matches_pytorch_at_other_batch_sizes(tmp_path: Path) -> None:
    model = _model()
    path = export_onnx(model, tmp_path / "tsm.onnx", height=32, width=32)
    graph = onnx.load(str(path)).graph
    batch_dim = graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField("dim_value")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # Exported with batch 2: 1 and 3 catch any shift whose shapes were frozen at trace time.
    for batch in (1, 3):
        x = torch.randn(batch, T, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            want_logits, want_emb = model.forward_features(x)
        logits, emb = session.run(["logits", "embedding"], {"clips": x.numpy()})
        np.testing.assert_allclose(logits, want_logits.numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(emb, want_emb.numpy(), rtol=1e-4, atol=1e-4)
