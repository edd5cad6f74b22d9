from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from workers.training.evaluate import EvalResult, accumulate, plot_confusion, save_result

CLASSES = ("a", "b", "c", "d", "e", "f")


def _one_hot_ranking(order: list[int]) -> list[float]:
    """Logits whose descending order is ``order`` (remaining classes after it)."""
    logits = [0.0] * len(CLASSES)
    for rank, index in enumerate(order):
        logits[index] = 10.0 - rank
    return logits


def test_top1_top5_and_confusion_are_counted_exactly() -> None:
    logits = torch.tensor(
        [
            _one_hot_ranking([0]),  # true 0: top-1 hit
            _one_hot_ranking([1, 2, 3, 4, 5]),  # true 0: ranked 6th -> miss in top-5
            _one_hot_ranking([2, 1]),  # true 1: top-5 hit, predicted 2
            _one_hot_ranking([5, 4, 3, 2, 1]),  # true 1: 5th -> top-5 hit
        ]
    )
    labels = torch.tensor([0, 0, 1, 1])
    # Two batches, to check that they accumulate.
    result = accumulate([(logits[:2], labels[:2]), (logits[2:], labels[2:])], 6, CLASSES)
    assert result.top1 == 0.25
    assert result.top5 == 0.75
    assert result.count == 4
    expected = np.zeros((6, 6), dtype=np.int64)
    expected[0, 0] = expected[0, 1] = expected[1, 2] = expected[1, 5] = 1
    np.testing.assert_array_equal(result.confusion, expected)
    assert result.per_class["a"] == 0.5 and result.per_class["b"] == 0.0
    assert np.isnan(result.per_class["c"])


def test_confusion_png_and_json(tmp_path: Path) -> None:
    confusion = np.array([[3, 1], [0, 4]])
    result = EvalResult(("left", "right"), confusion, top1=7 / 8, top5=1.0)
    png = plot_confusion(result, tmp_path / "plots" / "confusion.png")
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 100
    saved = save_result(result, tmp_path / "eval.json", checkpoint="x.pt")
    text = saved.read_text()
    assert '"top1": 0.875' in text and '"checkpoint": "x.pt"' in text and '"right": 1.0' in text
