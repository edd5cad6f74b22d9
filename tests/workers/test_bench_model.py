"""The shift-share reading of `tsmindex bench model`, on a small network."""

from __future__ import annotations

import pytest

from model_store.tsm import cpu_supports_bf16
from workers.benchmarks.model import ModelBenchConfig, shift_share


def test_shift_share_times_every_shift_on_the_inputs_a_forward_gave_it() -> None:
    config = ModelBenchConfig(arch="resnet18", segments=4, size=32, repeats=3)
    steps: list[str] = []
    result = shift_share(config, steps.append)
    assert set(result) == ({"fp32", "bf16"} if cpu_supports_bf16() else {"fp32"})
    for precision, share in result.items():
        assert share["shifts_per_forward"] == 8  # every BasicBlock of resnet18 shifts
        # Under bf16 autocast the blocks pass bf16 activations, so the shift moves half the bytes.
        assert share["input_dtype"] == {"fp32": "torch.float32", "bf16": "torch.bfloat16"}[precision]
        assert len(share["raw"]["forward_s"]) == len(share["raw"]["shift_s"]) == 3
        assert 0 < share["shift_s"] < share["forward_s"]
        assert share["share"] == pytest.approx(
            sorted(s / f for s, f in zip(share["raw"]["shift_s"], share["raw"]["forward_s"], strict=True))[1]
        )
    assert steps[-1] == f"shift share ({list(result)[-1]}): round 3/3"
