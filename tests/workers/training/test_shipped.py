from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from model_store.tsm import load_model
from workers.media import sample_clips
from workers.training.datasets import load_samples, normalise
from workers.training.shipped import SHIPPED_MODEL, SHIPPED_SPEC, write_demo_clips


def test_the_shipped_model_is_small_and_describes_its_input() -> None:
    assert SHIPPED_MODEL.stat().st_size < 6 * 1024**2
    stored = torch.load(SHIPPED_MODEL, weights_only=True)["state_dict"]
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    model, card = load_model(SHIPPED_MODEL)
    assert next(model.parameters()).dtype == torch.float32
    assert card.classes == tuple(sorted(SHIPPED_SPEC.classes))
    assert card.preprocess.resize == card.preprocess.crop == SHIPPED_SPEC.size
    assert card.config.num_segments == SHIPPED_SPEC.frames and card.config.shift_div == 8


@torch.inference_mode()
def test_the_shipped_model_labels_fresh_motion_clips_through_the_indexers_decoder(tmp_path: Path) -> None:
    videos = load_samples(write_demo_clips(tmp_path, count=12, seed=77))
    model, card = load_model(SHIPPED_MODEL)
    pre = card.preprocess
    clips = [
        sample_clips(s.path, num_segments=card.config.num_segments, resize=pre.resize, crop=pre.crop)
        .clips[0]
        .frames
        for s in videos.samples
    ]
    predicted = model(normalise(torch.from_numpy(np.stack(clips)), pre)).argmax(1).tolist()
    assert [card.classes[i] for i in predicted] == [videos.classes[s.label] for s in videos.samples]
