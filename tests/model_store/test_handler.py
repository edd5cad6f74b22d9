"""The TorchServe handler with TorchServe's own Context (no server): per-clip statuses, options,
metrics. The model directory is laid out as TorchServe extracts an archive built by archive.py."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from ts.context import Context, RequestProcessor
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

from model_store.archive import CARD_FILE, WEIGHTS_FILE
from model_store.handler import TSMHandler
from model_store.inference import ClipModel
from model_store.tsm import ModelCard, Preprocess, TSMConfig, build_from_card, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
METRICS_YAML = ROOT / "infra" / "torchserve" / "metrics.yaml"
T, CROP, K = 4, 64, 7


@pytest.fixture(scope="module")
def card() -> ModelCard:
    return ModelCard(
        name="tsm-handler-test",
        version="h1",
        config=TSMConfig(arch="resnet18", num_classes=K, num_segments=T),
        preprocess=Preprocess(resize=73, crop=CROP),
        classes=tuple(f"k{i}" for i in range(K)),
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, card: ModelCard) -> Path:
    directory = tmp_path_factory.mktemp("model-dir")
    torch.manual_seed(0)
    save_checkpoint(directory / WEIGHTS_FILE, build_from_card(card), card)
    (directory / CARD_FILE).write_text(json.dumps(card.to_dict()))
    return directory


def make_context(model_dir: Path, headers: list[dict[str, Any]] | None = None) -> Context:
    metrics = MetricsCacheYamlImpl(config_file_path=str(METRICS_YAML))
    metrics.initialize_cache()
    metrics.model_name = "tsm"
    context = Context(
        model_name="tsm",
        model_dir=str(model_dir),
        manifest={"model": {"modelName": "tsm", "serializedFile": WEIGHTS_FILE, "handler": "handler.py"}},
        batch_size=8,
        gpu=None,
        mms_version="0.12.0",
        metrics=metrics,
        model_yaml_config={"precision": "fp32"},
    )
    if headers is not None:
        context.request_processor = [RequestProcessor(h) for h in headers]
        context.request_ids = {i: f"req-{i}" for i in range(len(headers))}
        metrics.request_ids = context.request_ids
    return context


@pytest.fixture(scope="module")
def handler(model_dir: Path) -> TSMHandler:
    h = TSMHandler()
    h.initialize(make_context(model_dir))
    return h


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def clips(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(T, CROP, CROP, 3), dtype=np.uint8) for _ in range(n)]


def test_initialize_loads_the_card_weights_and_precision(handler: TSMHandler, card: ModelCard) -> None:
    assert handler.initialized
    assert handler.clip_model.card == card
    assert handler.clip_model.precision == "fp32"
    assert handler.device == torch.device("cpu")


def test_one_bad_clip_fails_alone_and_the_rest_match_clip_model(
    handler: TSMHandler, model_dir: Path, card: ModelCard
) -> None:
    good = clips(3, seed=1)
    data = [{"body": npy(good[0])}, {"body": b"garbage"}, {"body": npy(good[1])}, {"body": npy(good[2])}]
    context = make_context(model_dir, headers=[{} for _ in data])

    outputs = handler.handle(data, context)

    assert len(outputs) == 4
    assert [context.get_response_status(i)[0] for i in range(4)] == [200, 400, 200, 200]
    assert context.get_response_status(1)[1].startswith("body is not a NumPy .npy array")
    assert json.loads(outputs[1])["error"]["reason"] == "not_npy"
    assert all(context.get_response_content_type(i) == "application/json" for i in range(4))
    expected = handler.clip_model.classify(good)
    assert [json.loads(outputs[i]) for i in (0, 2, 3)] == expected
    assert all(
        json.loads(outputs[i])["model"] == {"name": card.name, "version": card.version} for i in (0, 2, 3)
    )


def test_top_k_and_embedding_come_from_each_requests_headers(handler: TSMHandler, model_dir: Path) -> None:
    a, b = clips(2, seed=2)
    headers = [{"X-TSM-Top-K": "2", "x-tsm-embedding": "true"}, {}]
    context = make_context(model_dir, headers=headers)

    first, second = (json.loads(o) for o in handler.handle([{"body": npy(a)}, {"body": npy(b)}], context))

    assert len(first["labels"]) == 2
    assert len(first["embedding"]) == handler.clip_model.model.embedding_dim
    assert len(second["labels"]) == 5
    assert "embedding" not in second


@pytest.mark.parametrize("value", ["zero", "0", "1001"])
def test_an_invalid_top_k_fails_only_its_clip(handler: TSMHandler, model_dir: Path, value: str) -> None:
    a, b = clips(2, seed=3)
    context = make_context(model_dir, headers=[{"x-tsm-top-k": value}, {}])
    outputs = handler.handle([{"body": npy(a)}, {"body": npy(b)}], context)
    assert [context.get_response_status(i)[0] for i in range(2)] == [400, 200]
    assert json.loads(outputs[0])["error"]["reason"] == "bad_param"


def test_a_batch_of_only_bad_clips_never_runs_the_network(
    handler: TSMHandler, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("forward ran for a batch without valid clips")

    monkeypatch.setattr(ClipModel, "infer", fail)
    context = make_context(model_dir, headers=[{}, {}])
    truncated = npy(clips(1)[0])[:1000]
    outputs = handler.handle([{"body": truncated}, {"data": None}], context)
    assert [context.get_response_status(i)[0] for i in range(2)] == [400, 400]
    assert [json.loads(o)["error"]["reason"] for o in outputs] == ["not_npy", "not_npy"]


def test_each_batch_reports_its_size_and_stage_times(
    handler: TSMHandler, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = [{"body": npy(c)} for c in clips(3, seed=4)] + [{"body": b"x"}]
    context = make_context(model_dir, headers=[{} for _ in data])
    with caplog.at_level(logging.INFO, logger="ts.metrics.caching_metric"):
        handler.handle(data, context)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[METRICS]")]
    values: dict[str, float] = {}
    for line in lines:
        name_unit, rest = line.removeprefix("[METRICS]").split(":", 1)
        values[name_unit.rsplit(".", 1)[0]] = float(rest.split("|", 1)[0])
        assert "|#ModelName:tsm,Level:Model|" in line
    assert values["tsmindex_handler_batch_size"] == 4
    assert values["tsmindex_handler_batches_total"] == 1
    assert values["tsmindex_handler_clips_total"] == 4
    assert values["tsmindex_handler_rejected_clips_total"] == 1
    for stage in ("preprocess", "forward", "postprocess"):
        assert values[f"tsmindex_handler_{stage}_seconds_total"] > 0
    assert "#type:HISTOGRAM" in next(x for x in lines if "tsmindex_handler_batch_size." in x)
