"""`tsmindex export onnx|torchscript`: the files load in their runtimes and answer like PyTorch; the
parity check fails the command when they do not agree closely enough."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from typer.testing import CliRunner

from model_store.tsm import load_model
from workers.cli import app
from workers.training.shipped import SHIPPED_MODEL


def _diffs(output: str) -> list[float]:
    """The max |logit diff| column of the parity table."""
    return [float(m) for m in re.findall(r"│\s+[13] │\s+([0-9.e+-]+) │", output)]


def _export(fmt: str, out: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["export", fmt, "tsm-motion-mnv2-32px", "--out", str(out), *extra])
    return result.exit_code, result.output


def _pytorch_logits(x: torch.Tensor) -> np.ndarray:
    model, _ = load_model(SHIPPED_MODEL)
    with torch.no_grad():
        return model.float().eval().forward_features(x)[0].numpy()


def _clips() -> torch.Tensor:  # a batch size the export was not made with
    return torch.randn(4, 8, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_torchscript_export_writes_the_network_and_its_card_and_holds_parity(tmp_path: Path) -> None:
    out = tmp_path / "motion.pt"
    code, output = _export("torchscript", out)
    assert code == 0, output
    diffs = _diffs(output)
    assert len(diffs) == 2 and max(diffs) <= 1e-3 and "parity holds" in output
    _, card = load_model(SHIPPED_MODEL)
    assert json.loads((tmp_path / "motion.pt.card.json").read_text()) == card.to_dict()
    with torch.no_grad():
        got = torch.jit.load(str(out))(_clips())[0].numpy()  # type: ignore[no-untyped-call]
    np.testing.assert_allclose(got, _pytorch_logits(_clips()), atol=1e-4, rtol=1e-4)


def test_onnx_export_answers_like_pytorch_and_a_tighter_tolerance_fails_the_command(tmp_path: Path) -> None:
    out = tmp_path / "motion.onnx"
    code, output = _export("onnx", out, "--atol", "1e-12")  # float32 graphs differ in the last bits
    assert code == 1, output
    diffs = _diffs(output)
    assert len(diffs) == 2 and 1e-12 < max(diffs) <= 1e-3
    assert "exceeds --atol 1e-12" in " ".join(output.split())
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"clips": _clips().numpy()})[0]
    np.testing.assert_allclose(got, _pytorch_logits(_clips()), atol=1e-4, rtol=1e-4)
    assert (tmp_path / "motion.onnx.card.json").is_file()
