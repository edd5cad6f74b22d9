"""`tsmindex export onnx|torchscript`: the files load in their runtimes and answer like PyTorch; the
parity check fails the command when they do not agree closely enough."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from model_store.tsm import load_model
from workers.cli import app
from workers.training.shipped import SHIPPED_MODEL


def _diffs(output: str) -> list[float]:
    """The max |logit diff| column of the parity table."""
    return [float(m) for m in re.findall(r"│\s+[13] │\s+([0-9.e+-]+) │", output)]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_writes_the_network_and_its_card_and_reports_parity(fmt: str, tmp_path: Path) -> None:
    out = tmp_path / f"motion.{fmt}"
    result = CliRunner().invoke(
        app, ["export", fmt, "tsm-motion-mnv2-32px", "--out", str(out)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    diffs = _diffs(result.output)
    assert len(diffs) == 2 and max(diffs) <= 1e-3
    assert "parity holds" in result.output
    model, card = load_model(SHIPPED_MODEL)
    assert json.loads((tmp_path / f"motion.{fmt}.card.json").read_text()) == card.to_dict()

    # Independently of the command: the file answers like PyTorch at a batch size of its own.
    x = torch.randn(4, 8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model.float().eval().forward_features(x)[0].numpy()
    if fmt == "onnx":
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = session.run(["logits"], {"clips": x.numpy()})[0]
    else:
        with torch.no_grad():
            got = torch.jit.load(str(out))(x)[0].numpy()  # type: ignore[no-untyped-call]
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_export_fails_when_the_difference_exceeds_the_tolerance(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["export", "onnx", str(SHIPPED_MODEL), "--out", str(tmp_path / "m.onnx"), "--atol", "1e-12"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 1, result.output
    assert max(_diffs(result.output)) > 1e-12
    assert "exceeds --atol 1e-12" in result.output
