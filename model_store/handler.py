"""TorchServe handler: a thin adapter from TorchServe's batch API to ``ClipModel``.

One request = one clip (NPY bytes). A clip that cannot be parsed gets its own 4xx through the
context's per-request status; the rest of its batch is still classified. Keep this file thin so the
model code can move to another server.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ts.metrics.metric_cache_errors import MetricsCacheKeyError
from ts.metrics.metric_type_enum import MetricTypes
from ts.torch_handler.base_handler import BaseHandler

from model_store.inference import ClipModel, ClipRejected
from model_store.int8 import INT8_FILE, Int8Network
from model_store.tsm import ModelCard, load_model

CARD_FILE = "card.json"
DEFAULT_TOP_K = 5
# Per-request options travel as headers (TorchServe 0.12 hands them to the handler per request).
TOP_K_HEADER = "x-tsm-top-k"
EMBEDDING_HEADER = "x-tsm-embedding"

# Declared in infra/torchserve/metrics.yaml; TorchServe exports only metrics it knows.
METRIC_BATCH_SIZE = "tsmindex_handler_batch_size"
METRIC_BATCHES = "tsmindex_handler_batches_total"
METRIC_CLIPS = "tsmindex_handler_clips_total"
METRIC_REJECTED = "tsmindex_handler_rejected_clips_total"
METRIC_STAGE_SECONDS = {
    "preprocess": "tsmindex_handler_preprocess_seconds_total",
    "forward": "tsmindex_handler_forward_seconds_total",
    "postprocess": "tsmindex_handler_postprocess_seconds_total",
}


class TSMHandler(BaseHandler):  # type: ignore[misc]  # TorchServe ships no type hints
    def initialize(self, context: Any) -> None:
        properties = context.system_properties
        model_dir = Path(properties["model_dir"])
        gpu_id = properties.get("gpu_id")
        if torch.cuda.is_available() and gpu_id is not None:
            device = torch.device(f"cuda:{gpu_id}")
        else:
            device = torch.device("cpu")
        card = ModelCard.from_dict(json.loads((model_dir / CARD_FILE).read_text()))
        model_config = getattr(context, "model_yaml_config", None) or {}
        precision = model_config.get("precision", "auto")
        if precision == "int8":  # the archive's quantized graph; a CPU path, whatever the host has
            device = torch.device("cpu")
            self.clip_model = ClipModel(
                Int8Network(model_dir / INT8_FILE), card, device=device, precision="int8"
            )
        else:
            model, card = load_model(model_dir / context.manifest["model"]["serializedFile"], card=card)
            compile_ = bool(model_config.get("compile", False))
            self.clip_model = ClipModel(model, card, device=device, precision=precision, compile=compile_)
        self.device = device
        self.context = context
        self.initialized = True

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[Any]:
        self.context = context
        model = self.clip_model
        started = time.perf_counter()
        outputs: list[Any] = [None] * len(data)
        clips: list[np.ndarray] = []
        slots: list[int] = []
        top_ks: list[int] = []
        embeds: list[bool] = []
        for i, row in enumerate(data):
            context.set_response_content_type(i, "application/json")
            try:
                clip = model.parse(_body(row))
                headers = _headers(context, i)
                top_k = _top_k(headers.get(TOP_K_HEADER))
                with_embedding = headers.get(EMBEDDING_HEADER, "").lower() == "true"
            except ClipRejected as exc:
                context.set_response_status(exc.status, exc.message, idx=i)
                outputs[i] = json.dumps(exc.to_dict())
                continue
            clips.append(clip)
            slots.append(i)
            top_ks.append(top_k)
            embeds.append(with_embedding)

        forward_s = postprocess_s = 0.0
        preprocess_s = time.perf_counter() - started
        if clips:
            t0 = time.perf_counter()
            batch = model.preprocess(clips)
            t1 = time.perf_counter()
            probs, embeddings = model.infer(batch)
            t2 = time.perf_counter()
            results = model.postprocess(probs, embeddings, top_k=top_ks, with_embedding=embeds)
            for slot, result in zip(slots, results, strict=True):
                outputs[slot] = json.dumps(result)
            t3 = time.perf_counter()
            preprocess_s += t1 - t0
            forward_s = t2 - t1
            postprocess_s = t3 - t2
        self._record(len(data), len(data) - len(clips), preprocess_s, forward_s, postprocess_s)
        return outputs

    def _record(self, size: int, rejected: int, preprocess_s: float, forward_s: float, post_s: float) -> None:
        dims = [self.context.model_name, "Model"]
        self._metric(METRIC_BATCH_SIZE, MetricTypes.HISTOGRAM, "count").add_or_update(size, dims)
        self._metric(METRIC_BATCHES, MetricTypes.COUNTER, "count").add_or_update(1, dims)
        self._metric(METRIC_CLIPS, MetricTypes.COUNTER, "count").add_or_update(size, dims)
        if rejected:
            self._metric(METRIC_REJECTED, MetricTypes.COUNTER, "count").add_or_update(rejected, dims)
        for stage, seconds in (("preprocess", preprocess_s), ("forward", forward_s), ("postprocess", post_s)):
            metric = self._metric(METRIC_STAGE_SECONDS[stage], MetricTypes.COUNTER, "s")
            metric.add_or_update(seconds, dims)

    def _metric(self, name: str, metric_type: MetricTypes, unit: str) -> Any:
        metrics = self.context.metrics
        try:
            return metrics.get_metric(name, metric_type)
        except MetricsCacheKeyError:
            # Without our metrics.yaml the worker still answers; the frontend just does not export these.
            return metrics.add_metric_to_cache(name, unit, ["ModelName", "Level"], metric_type)


def _body(row: dict[str, Any]) -> bytes | bytearray:
    body = row.get("body")
    if body is None:
        body = row.get("data")
    if not isinstance(body, (bytes, bytearray)):
        raise ClipRejected("not_npy", "request body must be NPY bytes (application/octet-stream)", status=400)
    return body


def _headers(context: Any, idx: int) -> dict[str, str]:
    """Request headers with lower-case names (HTTP header names are case-insensitive)."""
    return {k.lower(): v for k, v in context.get_all_request_header(idx).items() if isinstance(v, str)}


def _top_k(text: str | None) -> int:
    if text is None:
        return DEFAULT_TOP_K
    try:
        value = int(text)
    except ValueError as exc:
        message = f"{TOP_K_HEADER} must be an integer, got {text!r}"
        raise ClipRejected("bad_param", message, status=400) from exc
    if not 1 <= value <= 1000:
        raise ClipRejected("bad_param", f"{TOP_K_HEADER} must be between 1 and 1000, got {value}", status=400)
    return value
