"""ClipModel: NPY parsing and validation, preprocessing, and the per-clip JSON."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from model_store.inference import (
    CPU_BATCH_SIZE,
    GPU_BATCH_SIZE,
    NPY_HEADER_SLACK,
    ClipModel,
    ClipRejected,
    default_batch_size,
    resolve_precision,
)
from model_store.tsm import TSM, ModelCard, Preprocess, TSMConfig, build_from_card, save_checkpoint

T, CROP, K = 4, 64, 6
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def card() -> ModelCard:
    return ModelCard(
        name="tsm-unit",
        version="u1",
        config=TSMConfig(arch="resnet18", num_classes=K, num_segments=T),
        preprocess=Preprocess(resize=73, crop=CROP, mean=MEAN, std=STD),
        classes=tuple(f"c{i}" for i in range(K)),
    )


@pytest.fixture(scope="module")
def model(card: ModelCard) -> ClipModel:
    torch.manual_seed(0)
    return ClipModel(build_from_card(card), card, device="cpu", precision="fp32")


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def clip(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(T, CROP, CROP, 3), dtype=np.uint8)


def test_parse_returns_the_clip(model: ClipModel) -> None:
    original = clip()
    np.testing.assert_array_equal(model.parse(npy(original)), original)


@pytest.mark.parametrize(
    ("body", "reason", "status"),
    [
        (b"", "not_npy", 400),
        (b"not an npy file at all", "not_npy", 400),
        (npy(np.array([{"a": 1}, None], dtype=object)), "not_npy", 400),  # pickled objects: never loaded
        (npy(clip())[:-100], "not_npy", 400),  # truncated data
        (npy(clip().astype(np.int8)), "bad_dtype", 422),
        (npy(clip()[:, :, :, :1].copy()), "bad_shape", 422),
        (npy(clip()[:-1].copy()), "bad_shape", 422),
        (npy(np.zeros((T, CROP - 1, CROP, 3), np.uint8)), "bad_shape", 422),
        (npy(clip().astype(np.float32)), "too_large", 413),
        (b"\x93NUMPY" + b"\0" * (T * CROP * CROP * 3 + NPY_HEADER_SLACK), "too_large", 413),
    ],
)
def test_parse_rejects_each_malformed_body(model: ClipModel, body: bytes, reason: str, status: int) -> None:
    with pytest.raises(ClipRejected) as raised:
        model.parse(body)
    assert (raised.value.reason, raised.value.status) == (reason, status)
    assert raised.value.to_dict() == {
        "error": {"reason": reason, "message": raised.value.message, "status": status}
    }


def test_parse_rejects_an_npz_archive(model: ClipModel) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, clip=clip())
    assert zipfile.is_zipfile(io.BytesIO(buffer.getvalue()))
    with pytest.raises(ClipRejected) as raised:
        model.parse(buffer.getvalue())
    assert raised.value.reason == "not_npy"


def test_bad_shape_message_names_both_shapes(model: ClipModel) -> None:
    with pytest.raises(
        ClipRejected, match=r"must be \[4, 64, 64, 3\] \(\[T, H, W, 3\] RGB\), got \[3, 64, 64, 3\]"
    ):
        model.validate(clip()[:3])


def test_preprocess_normalises_with_the_card_mean_and_std(model: ClipModel) -> None:
    values = (0, 51, 255)
    clips = [np.full((T, CROP, CROP, 3), v, dtype=np.uint8) for v in values]
    x = model.preprocess(clips)
    assert x.shape == (3, T, 3, CROP, CROP)
    assert x.dtype == torch.float32
    for n, v in enumerate(values):
        for c in range(3):
            expected = (v / 255.0 - MEAN[c]) / STD[c]
            assert torch.allclose(x[n, :, c], torch.full((T, CROP, CROP), expected), atol=1e-6)


def test_preprocess_keeps_rgb_channel_order(model: ClipModel) -> None:
    frames = np.zeros((T, CROP, CROP, 3), dtype=np.uint8)
    frames[..., 0] = 255  # pure red
    x = model.preprocess([frames])
    assert torch.allclose(x[0, :, 0], torch.full((T, CROP, CROP), (1 - MEAN[0]) / STD[0]), atol=1e-6)
    assert torch.allclose(x[0, :, 1], torch.full((T, CROP, CROP), -MEAN[1] / STD[1]), atol=1e-6)


def test_infer_returns_probabilities_and_embeddings(model: ClipModel) -> None:
    probs, embeddings = model.infer(model.preprocess([clip(1), clip(2)]))
    assert probs.shape == (2, K) and probs.dtype == torch.float32
    assert torch.allclose(probs.sum(dim=1), torch.ones(2), atol=1e-6)
    assert embeddings.shape == (2, model.model.embedding_dim) == (2, 512)


def test_postprocess_top_k_sorted_with_names_and_model(model: ClipModel) -> None:
    probs = torch.tensor([[0.1, 0.4, 0.05, 0.3, 0.1, 0.05], [0.5, 0.1, 0.1, 0.1, 0.1, 0.1]])
    embeddings = torch.arange(2 * 3, dtype=torch.float32).view(2, 3)
    first, second = model.postprocess(probs, embeddings, top_k=[2, 1], with_embedding=[True, False])
    assert first == {
        "labels": [
            {"label": "c1", "index": 1, "score": pytest.approx(0.4)},
            {"label": "c3", "index": 3, "score": pytest.approx(0.3)},
        ],
        "model": {"name": "tsm-unit", "version": "u1"},
        "embedding": [0.0, 1.0, 2.0],
    }
    assert second == {
        "labels": [{"label": "c0", "index": 0, "score": pytest.approx(0.5)}],
        "model": {"name": "tsm-unit", "version": "u1"},
    }


def test_postprocess_caps_top_k_at_the_number_of_classes(model: ClipModel) -> None:
    probs = torch.full((1, K), 1 / K)
    [result] = model.postprocess(probs, torch.zeros(1, 4), top_k=50)
    assert sorted(x["index"] for x in result["labels"]) == list(range(K))


def test_a_clip_gets_the_same_answer_alone_and_in_a_batch(model: ClipModel) -> None:
    clips = [clip(10), clip(11), clip(12)]
    batched = model.classify(clips, top_k=K, with_embedding=True)
    for one, in_batch in zip(clips, batched, strict=True):
        [alone] = model.classify([one], top_k=K, with_embedding=True)
        assert [x["index"] for x in alone["labels"]] == [x["index"] for x in in_batch["labels"]]
        assert [x["score"] for x in alone["labels"]] == pytest.approx(
            [x["score"] for x in in_batch["labels"]], abs=1e-5
        )
        np.testing.assert_allclose(alone["embedding"], in_batch["embedding"], rtol=1e-4, atol=1e-5)


def test_bf16_autocast_agrees_with_fp32_on_the_top_label(card: ModelCard, model: ClipModel) -> None:
    assert isinstance(model.model, TSM)
    bf16 = ClipModel(model.model, card, device="cpu", precision="bf16")
    clips = [clip(20)]
    fp32_probs, _ = model.infer(model.preprocess(clips))
    bf16_probs, bf16_embeddings = bf16.infer(bf16.preprocess(clips))
    assert bf16_probs.dtype == bf16_embeddings.dtype == torch.float32  # the JSON side never sees bf16
    assert torch.allclose(fp32_probs, bf16_probs, atol=2e-2)


def test_from_checkpoint_uses_the_card_in_the_file(tmp_path: Path, card: ModelCard, model: ClipModel) -> None:
    path = tmp_path / "w.pt"
    assert isinstance(model.model, TSM)
    save_checkpoint(path, model.model, card)
    loaded = ClipModel.from_checkpoint(path, device="cpu", precision="fp32")
    assert loaded.card == card
    assert loaded.clip_shape == (T, CROP, CROP, 3)
    assert loaded.classify([clip(30)]) == model.classify([clip(30)])


def test_precision_and_batch_size_follow_the_device() -> None:
    native_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert resolve_precision(torch.device("cpu")) == ("bf16" if native_bf16 else "fp32")
    assert resolve_precision(torch.device("cuda")) == "fp16"
    assert resolve_precision(torch.device("cpu"), "fp32") == "fp32"
    assert default_batch_size(torch.device("cuda")) == GPU_BATCH_SIZE == 16
    assert default_batch_size(torch.device("cpu")) == CPU_BATCH_SIZE


def test_compiled_forward_gives_the_eager_answers(card: ModelCard, model: ClipModel) -> None:
    assert isinstance(model.model, TSM)
    compiled = ClipModel(model.model, card, device="cpu", precision="fp32", compile=True)
    assert compiled.compiled and not model.compiled
    clips = [clip(40), clip(41)]
    want = model.classify(clips, with_embedding=True)
    got = compiled.classify(clips, with_embedding=True)
    assert [[x["index"] for x in r["labels"]] for r in got] == [
        [x["index"] for x in r["labels"]] for r in want
    ]
    np.testing.assert_allclose(got[0]["embedding"], want[0]["embedding"], rtol=1e-3, atol=1e-4)
