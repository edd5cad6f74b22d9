"""The served model against a real TorchServe (started by tests/torchserve_server.py)."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from services.core.indexing.errors import InferenceError
from tests.torchserve_server import BATCH_SIZE, ServedModel
from workers.inference import InProcessEngine, TorchServeClient, encode_clip, read_key_file

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _clips(n: int, shape: tuple[int, ...], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=shape, dtype=np.uint8) for _ in range(n)]


def _handler_metrics(served: ServedModel) -> dict[str, float]:
    """The handler's Prometheus samples, keyed by name (+ le for histogram buckets)."""
    text = httpx.get(f"{served.settings.torchserve_metrics_url}/metrics", timeout=10).text
    samples: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r'^(tsmindex_handler_\w+)\{[^}]*?(?:le="([^"]+)",)?\} (\S+)$', line)
        if match:
            name, le, value = match.groups()
            samples[f"{name}[{le}]" if le else name] = float(value)
    return samples


def _delta(after: dict[str, float], before: dict[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


def _post(served: ServedModel, body: bytes, *, token: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/octet-stream"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    url = f"{served.settings.torchserve_inference_url}/predictions/tsm"
    return httpx.post(url, content=body, headers=headers, timeout=120)


def test_48_concurrent_clips_match_the_in_process_engine(torchserve: ServedModel) -> None:
    clips = _clips(48, torchserve.clip_shape, seed=1)
    with TorchServeClient(torchserve.settings, max_in_flight=48) as client:
        served = client.classify(clips, top_k=3, with_embedding=True)
    with InProcessEngine.from_checkpoint(
        torchserve.checkpoint, device="cpu", precision="fp32", batch_size=BATCH_SIZE
    ) as engine:
        local = engine.classify(clips, top_k=3, with_embedding=True)

    assert len(served) == len(local) == 48
    for remote, here in zip(served, local, strict=True):
        assert [(x.label, x.index) for x in remote.labels] == [(x.label, x.index) for x in here.labels]
        assert [x.score for x in remote.labels] == pytest.approx([x.score for x in here.labels], abs=1e-5)
        assert remote.embedding is not None and here.embedding is not None
        np.testing.assert_allclose(remote.embedding, here.embedding, rtol=1e-4, atol=1e-5)
        assert (remote.model_name, remote.model_version) == (torchserve.card_name, torchserve.card_version)
    # Random clips through a random network: the answers are not all the same clip's.
    assert len({tuple(x.index for x in p.labels) for p in served}) > 1


def test_handler_metrics_show_batches_larger_than_one(torchserve: ServedModel) -> None:
    before = _handler_metrics(torchserve)
    with TorchServeClient(torchserve.settings, max_in_flight=48) as client:
        client.classify(_clips(48, torchserve.clip_shape, seed=2))
    after = _handler_metrics(torchserve)

    assert _delta(after, before, "tsmindex_handler_clips_total") == 48
    assert _delta(after, before, "tsmindex_handler_batch_size_sum") == 48
    batches = _delta(after, before, "tsmindex_handler_batch_size_count")
    singles = _delta(after, before, "tsmindex_handler_batch_size_bucket[1.0]")
    assert _delta(after, before, "tsmindex_handler_batches_total") == batches
    assert batches - singles > 0, "no batch held more than one clip"
    assert 48 / batches > 1
    assert _delta(after, before, "tsmindex_handler_forward_seconds_total") > 0


def test_requests_without_the_token_are_refused(torchserve: ServedModel) -> None:
    clip = encode_clip(_clips(1, torchserve.clip_shape, seed=3)[0])
    keys = read_key_file(torchserve.settings.torchserve_key_file)  # type: ignore[arg-type]

    refused = _post(torchserve, clip, token=None)
    wrong = _post(torchserve, clip, token="not-the-key")
    management = httpx.get(f"{torchserve.settings.torchserve_management_url}/models/tsm", timeout=10)

    for response in (refused, wrong, management):
        assert response.status_code == 400
        assert "Token Authorization failed" in response.json()["message"]
    assert _post(torchserve, clip, token=keys["inference"]).status_code == 200


def test_a_malformed_clip_fails_alone_in_its_batch(torchserve: ServedModel) -> None:
    token = read_key_file(torchserve.settings.torchserve_key_file)["inference"]  # type: ignore[arg-type]
    good = [encode_clip(c) for c in _clips(BATCH_SIZE - 1, torchserve.clip_shape, seed=4)]
    t, h, w, c = torchserve.clip_shape
    bad = encode_clip(np.zeros((t - 1, h, w, c), dtype=np.uint8))
    bodies = [*good[:3], bad, *good[3:]]

    before = _handler_metrics(torchserve)
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        responses = list(pool.map(lambda body: _post(torchserve, body, token=token), bodies))
    after = _handler_metrics(torchserve)

    assert [r.status_code for r in responses] == [200, 200, 200, 422, 200, 200, 200, 200]
    error = responses[3].json()["error"]
    assert error["reason"] == "bad_shape"
    assert error["message"] == f"clip shape must be {[t, h, w, c]} ([T, H, W, 3] RGB), got {[t - 1, h, w, c]}"
    for response in responses[:3] + responses[4:]:
        assert len(response.json()["labels"]) == 5
    # All eight arrived together and filled one batch: the bad clip shared it with the good ones.
    assert _delta(after, before, "tsmindex_handler_batches_total") == 1
    assert _delta(after, before, "tsmindex_handler_clips_total") == BATCH_SIZE
    assert _delta(after, before, "tsmindex_handler_rejected_clips_total") == 1


def test_client_raises_a_permanent_error_for_a_rejected_clip(torchserve: ServedModel) -> None:
    clips = _clips(3, torchserve.clip_shape, seed=5)
    clips[1] = clips[1].astype(np.int8)
    with TorchServeClient(torchserve.settings) as client, pytest.raises(InferenceError) as raised:
        client.classify(clips)
    error = raised.value
    assert (error.retryable, error.status, error.code, error.clip_index) == (False, 422, "bad_dtype", 1)


def test_client_rereads_the_key_file_when_its_token_is_refused(torchserve: ServedModel) -> None:
    assert torchserve.settings.torchserve_key_file is not None
    key = json.loads(torchserve.settings.torchserve_key_file.read_text())["inference"]["key"]
    with TorchServeClient(torchserve.settings) as client:
        client._token = "stale"  # as after a server restart with new keys
        [prediction] = client.classify(_clips(1, torchserve.clip_shape, seed=6))
        assert client._token == key
    assert prediction.model_name == torchserve.card_name


def test_ping_answers_with_the_token_and_after_new_keys(torchserve: ServedModel) -> None:
    # TorchServe refuses /ping without the key: a probe without it would keep the breaker open.
    assert torchserve.settings.torchserve_key_file is not None
    key = json.loads(torchserve.settings.torchserve_key_file.read_text())["inference"]["key"]
    with TorchServeClient(torchserve.settings) as client:
        assert client.ping() is True
        client._token = "stale"  # as after a server restart with new keys
        assert client.ping() is True
        assert client._token == key
    unreachable = torchserve.settings.model_copy(update={"torchserve_inference_url": "http://127.0.0.1:1"})
    with TorchServeClient(unreachable) as client:
        assert client.ping() is False
