"""The inference backends' own behaviour: in-process batching and errors, client retries and parsing.
The served answers themselves are checked against a real TorchServe in tests/integration."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import SecretStr

from model_store.inference import ClipModel
from model_store.tsm import ModelCard, Preprocess, TSMConfig, build_from_card
from services.core.config import Settings
from services.core.indexing.errors import InferenceError
from tests.platform_servers import free_port
from workers.inference import (
    ClipPrediction,
    InProcessEngine,
    Label,
    TorchServeClient,
    read_key_file,
)

T, CROP, K = 4, 64, 5


@pytest.fixture(scope="module")
def clip_model() -> ClipModel:
    card = ModelCard(
        name="tsm-engine-test",
        version="e1",
        config=TSMConfig(arch="resnet18", num_classes=K, num_segments=T),
        preprocess=Preprocess(resize=73, crop=CROP),
        classes=tuple(f"a{i}" for i in range(K)),
    )
    torch.manual_seed(0)
    return ClipModel(build_from_card(card), card, device="cpu", precision="fp32")


def clips(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(T, CROP, CROP, 3), dtype=np.uint8) for _ in range(n)]


def test_in_process_engine_batches_to_its_batch_size(
    clip_model: ClipModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    original = ClipModel.preprocess

    def spy(self: ClipModel, batch: list[np.ndarray]) -> torch.Tensor:
        seen.append(len(batch))
        return original(self, batch)

    monkeypatch.setattr(ClipModel, "preprocess", spy)
    data = clips(7)
    with InProcessEngine(clip_model, batch_size=3) as engine:
        predictions = engine.classify(data, top_k=2, with_embedding=True)
    assert seen == [3, 3, 1]
    expected = [ClipPrediction.from_dict(d) for d in clip_model.classify(data, top_k=2, with_embedding=True)]
    assert [p.labels[0].index for p in predictions] == [p.labels[0].index for p in expected]
    assert all(len(p.labels) == 2 and p.embedding is not None for p in predictions)
    assert {(p.model_name, p.model_version) for p in predictions} == {("tsm-engine-test", "e1")}


def test_in_process_engine_takes_the_batch_size_from_settings_then_the_device(
    clip_model: ClipModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    from model_store.inference import CPU_BATCH_SIZE
    from services.core.config import get_settings

    monkeypatch.delenv("TSMINDEX_INFERENCE_BATCH_SIZE", raising=False)
    get_settings.cache_clear()
    assert InProcessEngine(clip_model).batch_size == CPU_BATCH_SIZE
    monkeypatch.setenv("TSMINDEX_INFERENCE_BATCH_SIZE", "3")
    get_settings.cache_clear()
    try:
        assert InProcessEngine(clip_model).batch_size == 3
        assert InProcessEngine(clip_model, batch_size=5).batch_size == 5
    finally:
        get_settings.cache_clear()


def test_in_process_engine_rejects_a_bad_clip_before_any_work(clip_model: ClipModel) -> None:
    data = clips(3)
    data[2] = data[2][:, :32]
    with InProcessEngine(clip_model, batch_size=2) as engine, pytest.raises(InferenceError) as raised:
        engine.classify(data)
    error = raised.value
    assert (error.retryable, error.status, error.code, error.clip_index) == (False, 422, "bad_shape", 2)
    assert error.reason == "inference_rejected"


def test_prediction_from_handler_json() -> None:
    data = {
        "labels": [{"label": "jumping", "index": 3, "score": 0.75}],
        "embedding": [1, 2.5],
        "model": {"name": "tsm", "version": "7"},
    }
    assert ClipPrediction.from_dict(data) == ClipPrediction(
        labels=[Label("jumping", 3, 0.75)], embedding=[1.0, 2.5], model_name="tsm", model_version="7"
    )
    assert ClipPrediction.from_dict({**data, "embedding": None}).embedding is None


def test_client_retries_an_unreachable_server_with_backoff_then_gives_up() -> None:
    port = free_port()  # nothing listens there
    settings = Settings(
        torchserve_inference_url=f"http://127.0.0.1:{port}",
        torchserve_token=None,
        torchserve_key_file=None,
        torchserve_max_retries=3,
        torchserve_backoff_base_s=0.2,
        torchserve_backoff_cap_s=0.3,
    )
    started = time.monotonic()
    with TorchServeClient(settings) as client, pytest.raises(InferenceError) as raised:
        client.classify(clips(1))
    elapsed = time.monotonic() - started
    assert raised.value.retryable is True
    assert (raised.value.reason, raised.value.code) == ("inference_unavailable", "unavailable")
    assert "ConnectError" in str(raised.value)
    # Three sleeps of at least half their capped delay (jitter 0.5..1): 0.1 + 0.15 + 0.15.
    assert 0.4 <= elapsed < 5.0


def test_client_takes_the_inference_key_from_the_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "key_file.json"
    key_file.write_text(
        json.dumps(
            {
                "management": {"key": "m-key", "expiration time": "2030-01-01T00:00:00Z"},
                "inference": {"key": "i-key", "expiration time": "2030-01-01T00:00:00Z"},
                "API": {"key": "api-key"},
            }
        )
    )
    assert read_key_file(key_file) == {"management": "m-key", "inference": "i-key", "API": "api-key"}
    with TorchServeClient(Settings(torchserve_token=None, torchserve_key_file=key_file)) as client:
        assert client._token == "i-key"
    with TorchServeClient(
        Settings(torchserve_token=SecretStr("explicit"), torchserve_key_file=key_file)
    ) as client:
        assert client._token == "explicit"
