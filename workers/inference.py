"""Clip classification backends used by the workers.

``TorchServeClient`` posts clips to the model server and keeps many in flight so that its batches fill;
``InProcessEngine`` calls the handler's own inference code (``model_store.inference.ClipModel``) in
this process, for embedded mode and tests. Both have the same interface and return the same
``ClipPrediction`` for the same clip.
"""

from __future__ import annotations

import io
import json
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

import httpx
import numpy as np

from services.core.config import Settings, get_settings
from services.core.indexing.errors import (
    InferenceBadResponseError,
    InferenceError,
    InferenceRejectedError,
    InferenceUnavailableError,
)
from services.core.versions import ModelVersion

if TYPE_CHECKING:
    import torch

    from model_store.inference import ClipModel, Precision

# TorchServe answers 503 when its job queue is full or a worker is (re)starting, 507 when a batch ran
# out of memory: all pass once load drops, so they are retried.
RETRYABLE_STATUS = frozenset({502, 503, 504, 507})
# TorchServe 0.12 answers a missing or stale token with 400 and this text, not 401.
TOKEN_REFUSED_TEXT = "Token Authorization failed"


@dataclass(frozen=True)
class Label:
    label: str
    index: int
    score: float


@dataclass(frozen=True)
class ClipPrediction:
    labels: list[Label]
    embedding: list[float] | None
    model_name: str
    model_version: str

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipPrediction:
        """From the handler's JSON for one clip."""
        return cls(
            labels=[Label(str(x["label"]), int(x["index"]), float(x["score"])) for x in data["labels"]],
            embedding=[float(v) for v in data["embedding"]] if data.get("embedding") is not None else None,
            model_name=str(data["model"]["name"]),
            model_version=str(data["model"]["version"]),
        )


class ClipClassifier(Protocol):
    def classify(
        self,
        clips: Sequence[np.ndarray],
        *,
        top_k: int = 5,
        with_embedding: bool = False,
        model: ModelVersion | None = None,
    ) -> list[ClipPrediction]: ...

    def close(self) -> None: ...


def encode_clip(clip: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, clip, allow_pickle=False)
    return buffer.getvalue()


def read_key_file(path: Path) -> dict[str, str]:
    """TorchServe's key_file.json -> {"management": key, "inference": key, "API": key}."""
    data = json.loads(path.read_text())
    return {
        name: str(entry["key"]) for name, entry in data.items() if isinstance(entry, dict) and "key" in entry
    }


class TorchServeClient:
    """Posts one clip per request (NPY body) to TorchServe's inference API."""

    def __init__(self, settings: Settings | None = None, *, max_in_flight: int | None = None) -> None:
        self.settings = settings or get_settings()
        s = self.settings
        self.base_url = s.torchserve_inference_url.rstrip("/")
        self.url = f"{self.base_url}/predictions/{s.model_name}"  # the model's default version
        self.max_in_flight = max_in_flight or s.torchserve_max_in_flight
        self._token_lock = threading.Lock()
        self._token = self._load_token()
        self._http = httpx.Client(
            timeout=httpx.Timeout(s.torchserve_timeout_s, connect=s.torchserve_connect_timeout_s),
            limits=httpx.Limits(
                max_connections=self.max_in_flight, max_keepalive_connections=self.max_in_flight
            ),
        )
        self._pool = ThreadPoolExecutor(max_workers=self.max_in_flight, thread_name_prefix="torchserve")

    def classify(
        self,
        clips: Sequence[np.ndarray],
        *,
        top_k: int = 5,
        with_embedding: bool = False,
        model: ModelVersion | None = None,
    ) -> list[ClipPrediction]:
        """All clips at once, up to ``max_in_flight`` concurrent requests; results in input order.

        On the first failed clip the clips not yet sent are dropped, the ones in flight are waited
        for, and that clip's ``InferenceError`` is raised.
        """
        # Header names match model_store.handler (TOP_K_HEADER, EMBEDDING_HEADER).
        options = {"x-tsm-top-k": str(top_k), "x-tsm-embedding": "true" if with_embedding else "false"}
        # TorchServe serves several models and versions at once: a job's clips go to its own.
        url = self.url if model is None else f"{self.base_url}/predictions/{model.name}/{model.version}"
        futures = [
            self._pool.submit(self._predict_one, url, encode_clip(clip), options, index)
            for index, clip in enumerate(clips)
        ]
        results: list[ClipPrediction] = []
        first_error: InferenceError | None = None
        for future in futures:
            if future.cancelled():
                continue
            try:
                results.append(future.result())
            except InferenceError as exc:
                if first_error is None:
                    first_error = exc
                    for pending in futures:
                        pending.cancel()  # only those not started yet
        if first_error is not None:
            raise first_error
        return results

    def _predict_one(self, url: str, body: bytes, options: dict[str, str], index: int) -> ClipPrediction:
        s = self.settings
        token_reloaded = False
        attempt = 0
        while True:
            token = self._token
            headers = {"Content-Type": "application/octet-stream", **options}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            try:
                response = self._http.post(url, content=body, headers=headers)
            except httpx.TransportError as exc:  # connection refused/reset, timeouts
                error: InferenceError = InferenceUnavailableError(
                    f"TorchServe unreachable: {type(exc).__name__}: {exc}",
                    code="unavailable",
                    clip_index=index,
                )
            else:
                if response.status_code == 200:
                    try:
                        return ClipPrediction.from_dict(response.json())
                    except (ValueError, KeyError, TypeError) as exc:
                        raise InferenceBadResponseError(
                            f"TorchServe answered 200 with an unexpected body: {response.text[:200]!r}",
                            status=200,
                            code="bad_response",
                            clip_index=index,
                        ) from exc
                if (
                    response.status_code == 400
                    and TOKEN_REFUSED_TEXT in response.text
                    and not token_reloaded
                    and s.torchserve_key_file is not None
                ):
                    # The server may have been restarted (new keys): re-read its key file once.
                    token_reloaded = True
                    self._reload_token()
                    continue
                error = _error_from_response(response, index)
                if not error.retryable:
                    raise error
            attempt += 1
            if attempt > s.torchserve_max_retries:
                raise error
            delay = min(s.torchserve_backoff_cap_s, s.torchserve_backoff_base_s * 2 ** (attempt - 1))
            time.sleep(delay * random.uniform(0.5, 1.0))  # jitter: retries from many threads spread out

    def ping(self) -> bool:
        """Whether the server answers its health check (the breaker's probe). TorchServe with token
        authorization refuses a ``/ping`` without the inference key, so the probe carries it, and
        reads the key file again once when refused (a restarted server has new keys)."""
        url = f"{self.settings.torchserve_inference_url.rstrip('/')}/ping"
        timeout = self.settings.torchserve_connect_timeout_s
        for reread in (False, True):
            if reread:
                self._reload_token()
            headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
            try:
                response = self._http.get(url, headers=headers, timeout=timeout)
            except httpx.HTTPError:
                return False
            if response.is_success:
                return True
            refused = response.status_code == 400 and TOKEN_REFUSED_TEXT in response.text
            if not refused or self.settings.torchserve_key_file is None:
                return False
        return False

    def _load_token(self) -> str | None:
        s = self.settings
        if s.torchserve_token is not None and s.torchserve_token.get_secret_value():
            return s.torchserve_token.get_secret_value()
        if s.torchserve_key_file is not None and s.torchserve_key_file.exists():
            return read_key_file(s.torchserve_key_file).get("inference")
        return None

    def _reload_token(self) -> None:
        with self._token_lock:
            self._token = self._load_token()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _error_from_response(response: httpx.Response, index: int) -> InferenceError:
    status = response.status_code
    code: str | None = None
    message = response.text[:500]
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        if isinstance(payload.get("error"), dict):  # the handler's own per-clip error
            code = payload["error"].get("reason")
            message = str(payload["error"].get("message", message))
        elif "message" in payload:  # TorchServe's frontend errors
            message = str(payload["message"])
    if status not in RETRYABLE_STATUS and 400 <= status < 500:
        return InferenceRejectedError(
            f"TorchServe answered {status}: {message}",
            status=status,
            code=code or "rejected",
            clip_index=index,
        )
    return InferenceUnavailableError(
        f"TorchServe answered {status}: {message}",
        status=status,
        code=code or "unavailable",
        clip_index=index,
    )


class InProcessEngine:
    """The handler's inference code called directly, in batches of the served batch size
    (``batch_size``, else ``TSMINDEX_INFERENCE_BATCH_SIZE``, else the device default)."""

    def __init__(self, model: ClipModel, *, batch_size: int | None = None) -> None:
        from model_store.inference import default_batch_size

        self.model = model
        self.batch_size = (
            batch_size or get_settings().inference_batch_size or default_batch_size(model.device)
        )

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        device: torch.device | str | None = None,
        batch_size: int | None = None,
        precision: Precision = "auto",
        int8_model: str | Path | None = None,
        compile: bool = False,
    ) -> InProcessEngine:
        from model_store.inference import ClipModel

        model = ClipModel.from_checkpoint(
            path, device=device, precision=precision, int8_model=int8_model, compile=compile
        )
        return cls(model, batch_size=batch_size)

    @classmethod
    def from_settings(cls, settings: Settings) -> InProcessEngine:
        """TSMINDEX_CHECKPOINT_PATH at TSMINDEX_INFERENCE_PRECISION (int8: TSMINDEX_INT8_MODEL_PATH)."""
        if settings.checkpoint_path is None:
            raise ValueError("in-process inference needs TSMINDEX_CHECKPOINT_PATH")
        return cls.from_checkpoint(
            settings.checkpoint_path,
            precision=settings.inference_precision,
            int8_model=settings.int8_model_path,
            compile=settings.inference_compile,
        )

    def classify(
        self,
        clips: Sequence[np.ndarray],
        *,
        top_k: int = 5,
        with_embedding: bool = False,
        model: ModelVersion | None = None,
    ) -> list[ClipPrediction]:
        from model_store.inference import ClipRejected

        valid: list[np.ndarray] = []
        for index, clip in enumerate(clips):
            try:
                valid.append(self.model.validate(clip))
            except ClipRejected as exc:
                raise InferenceRejectedError(
                    exc.message, status=exc.status, code=exc.reason, clip_index=index
                ) from exc
        results: list[ClipPrediction] = []
        for start in range(0, len(valid), self.batch_size):
            batch = valid[start : start + self.batch_size]
            for data in self.model.classify(batch, top_k=top_k, with_embedding=with_embedding):
                results.append(ClipPrediction.from_dict(data))
        return results

    def close(self) -> None:
        """Nothing to release: the model is freed with the engine."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
