"""``TsmindexClient``: the HTTP API's operations as typed methods.

Each method calls one operation of ``OPERATIONS`` (method, path template, query parameters, form
fields, request and response models); ``tests/services/test_client_openapi.py`` fails when one of them
is not what the served OpenAPI document says. ``wait`` and ``wait_backfill`` poll on top of them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import httpx
from pydantic import BaseModel

from services.api.schemas import (
    AllowListRequest,
    BackfillOut,
    BackfillRequest,
    ComparisonOut,
    JobOut,
    JobPage,
    KeyOut,
    KeyRequest,
    KeysOut,
    LabelsOut,
    MomentPage,
    NewKeyOut,
    OwnTenantOut,
    ReindexRequest,
    RotateRequest,
    SearchPage,
    SimilarPage,
    SourceRequest,
    TenantOut,
    VideoOut,
)
from services.client.errors import ApiError, ApiUnavailableError, WaitTimeoutError
from services.core.indexing.options import IndexOptions

Model = TypeVar("Model", bound=BaseModel)

FINISHED_JOB = ("succeeded", "failed")
FINISHED_BACKFILL = ("completed", "failed", "cancelled")
SEARCH_QUERY = ("label", "min_score", "model_version", "cursor", "limit", "match", "model")


@dataclass(frozen=True)
class Operation:
    """One HTTP operation of the API as the client calls it."""

    method: str
    path: str  # the OpenAPI path template
    response: type[BaseModel] | None
    query: tuple[str, ...] = ()
    body: type[BaseModel] | None = None  # a JSON request body
    form: tuple[str, ...] = ()  # multipart/form-data fields
    media_type: str | None = None  # a response that is bytes of this type (images), not JSON


OPERATIONS: dict[str, Operation] = {
    "upload": Operation("POST", "/v1/videos", JobOut, form=("file", "model", *IndexOptions.model_fields)),
    "submit_source": Operation("POST", "/v1/videos", JobOut, body=SourceRequest),
    "video": Operation("GET", "/v1/videos/{video_id}", VideoOut, query=("model_version",)),
    "delete_video": Operation("DELETE", "/v1/videos/{video_id}", None),
    "search": Operation("GET", "/v1/videos", SearchPage, query=(*SEARCH_QUERY, "sort")),
    "moments": Operation("GET", "/v1/moments", MomentPage, query=(*SEARCH_QUERY, "start_s", "end_s")),
    "labels": Operation("GET", "/v1/labels", LabelsOut, query=("q", "model_version", "limit")),
    "similar_to_moment": Operation("GET", "/v1/moments/{moment_id}/similar", SimilarPage, query=("limit",)),
    "similar_to_window": Operation(
        "GET",
        "/v1/videos/{video_id}/windows/{window_index}/similar",
        SimilarPage,
        query=("model_version", "limit"),
    ),
    "similar_to_clip": Operation(
        "POST", "/v1/moments/similar", SimilarPage, query=("limit",), form=("file",)
    ),
    "thumbnail": Operation(
        "GET",
        "/v1/videos/{video_id}/windows/{window_index}/thumbnail",
        None,
        query=("model_version",),
        media_type="image/jpeg",
    ),
    "job": Operation("GET", "/v1/jobs/{job_id}", JobOut),
    "jobs": Operation("GET", "/v1/jobs", JobPage, query=("status", "reason", "cursor", "limit")),
    "start_backfill": Operation("POST", "/v1/backfills", BackfillOut, body=BackfillRequest),
    "backfill": Operation("GET", "/v1/backfills/{backfill_id}", BackfillOut),
    "cancel_backfill": Operation("POST", "/v1/backfills/{backfill_id}/cancel", BackfillOut),
    "reindex": Operation("POST", "/v1/reindex", BackfillOut, body=ReindexRequest),
    "compare": Operation("GET", "/v1/compare", ComparisonOut, query=("a", "b", "video_id", "limit")),
    "tenant": Operation("GET", "/v1/tenant", OwnTenantOut),
    "keys": Operation("GET", "/v1/admin/keys", KeysOut),
    "create_key": Operation("POST", "/v1/admin/keys", NewKeyOut, body=KeyRequest),
    "revoke_key": Operation("POST", "/v1/admin/keys/{key_id}/revoke", KeyOut),
    "rotate_key": Operation("POST", "/v1/admin/keys/{key_id}/rotate", NewKeyOut, body=RotateRequest),
    "set_s3_allow": Operation("PUT", "/v1/admin/tenants/{name}/s3-allow", TenantOut, body=AllowListRequest),
}


class _ProgressReader:
    """A file that reports how many bytes httpx has read from it (the upload's progress)."""

    def __init__(self, file: IO[bytes], total: int, on_progress: Callable[[int, int], None]) -> None:
        self._file, self._total, self._on_progress, self._done = file, total, on_progress, 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size)
        self._done += len(chunk)
        self._on_progress(self._done, self._total)
        return chunk

    def fileno(self) -> int:  # httpx sizes the part from the file's stat
        return self._file.fileno()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()


class TsmindexClient:
    """The tsmindex API at ``base_url``, authenticated by ``api_key`` (a bearer token)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TsmindexClient:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def _call(
        self,
        name: str,
        *,
        path: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        json: BaseModel | None = None,
        **send: Any,
    ) -> Any:
        """Send operation ``name``; its parsed response model (None for an empty answer)."""
        op = OPERATIONS[name]
        query = {k: v for k, v in (params or {}).items() if v is not None}
        unknown = set(query) - set(op.query)
        if unknown:
            raise TypeError(f"{name}: no query parameter {sorted(unknown)}")
        url = op.path.format(**(path or {}))
        content = json.model_dump_json(exclude_none=True).encode() if json is not None else None
        headers = {"Content-Type": "application/json"} if json is not None else {}
        headers |= send.pop("headers", {})
        try:
            response = self._http.request(
                op.method, url, params=query, content=content, headers=headers, **send
            )
        except httpx.TransportError as exc:
            raise ApiUnavailableError(f"{op.method} {self._http.base_url}{url}: {exc}") from exc
        if response.is_error:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, detail, method=op.method, url=url)
        if op.media_type is not None:
            return response.content
        if op.response is None:
            return None
        return op.response.model_validate_json(response.content)

    # Videos and jobs.

    def upload(
        self,
        path: Path,
        *,
        options: IndexOptions | None = None,
        model: str | None = None,
        idempotency_key: str | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> JobOut:
        """Upload a video file to be indexed by ``model`` (a served NAME or NAME:VERSION; default the
        served default); ``on_progress(sent, total)`` follows the bytes sent."""
        fields = (options or IndexOptions()).to_job_options()
        if model is not None:
            fields["model"] = model
        data = {k: [str(x) for x in v] if isinstance(v, list) else str(v) for k, v in fields.items()}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        with path.open("rb") as f:
            total = path.stat().st_size
            body: Any = _ProgressReader(f, total, on_progress) if on_progress else f
            job: JobOut = self._call(
                "upload", files={"file": (path.name, body, "video/mp4")}, data=data, headers=headers
            )
        return job

    def submit_source(self, request: SourceRequest, *, idempotency_key: str | None = None) -> JobOut:
        """Index an S3 object the API's workers can read (``s3://bucket/key``)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        job: JobOut = self._call("submit_source", json=request, headers=headers)
        return job

    def video(self, video_id: uuid.UUID | str, *, model_version: str | None = None) -> VideoOut:
        video: VideoOut = self._call(
            "video", path={"video_id": str(video_id)}, params={"model_version": model_version}
        )
        return video

    def delete_video(self, video_id: uuid.UUID | str) -> None:
        self._call("delete_video", path={"video_id": str(video_id)})

    def job(self, job_id: uuid.UUID | str) -> JobOut:
        job: JobOut = self._call("job", path={"job_id": str(job_id)})
        return job

    def jobs(
        self,
        *,
        status: str | None = None,
        reason: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> JobPage:
        page: JobPage = self._call(
            "jobs", params={"status": status, "reason": reason, "cursor": cursor, "limit": limit}
        )
        return page

    def wait(
        self,
        job_id: uuid.UUID | str,
        *,
        timeout_s: float | None = None,
        poll_s: float = 1.0,
        on_update: Callable[[JobOut], None] | None = None,
    ) -> JobOut:
        """Poll the job until it has succeeded or failed."""
        for job in _polled(lambda: self.job(job_id), timeout_s, poll_s, f"job {job_id}"):
            if on_update is not None:
                on_update(job)
            if job.status in FINISHED_JOB:
                return job
        raise AssertionError("unreachable")

    # Search.

    def search(
        self,
        label: str | Sequence[str],
        *,
        min_score: float = 0.0,
        model_version: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
        match: str = "any",
        sort: str = "peak",
        model: str | None = None,
    ) -> SearchPage:
        """Videos whose ``label`` (or any/all of several) scores at least ``min_score``, best first
        by the best window's score (``sort="peak"``) or the mean over windows (``"mean"``);
        ``model``: only that model's hits (NAME or NAME:VERSION)."""
        params = _search(label, min_score, model_version, cursor, limit, model) | {
            "match": match,
            "sort": sort,
        }
        page: SearchPage = self._call("search", params=params)
        return page

    def moments(
        self,
        label: str | Sequence[str],
        *,
        min_score: float = 0.0,
        model_version: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
        match: str = "any",
        start_s: float | None = None,
        end_s: float | None = None,
        model: str | None = None,
    ) -> MomentPage:
        """Where ``label`` happens: runs of windows, best first, overlapping [start_s, end_s)."""
        params = _search(label, min_score, model_version, cursor, limit, model)
        page: MomentPage = self._call(
            "moments", params=params | {"match": match, "start_s": start_s, "end_s": end_s}
        )
        return page

    def labels(
        self, *, q: str | None = None, model_version: str | None = None, limit: int = 1000
    ) -> LabelsOut:
        """The index's labels, or with ``q`` those that match it (prefix, substring, near spelling)."""
        labels: LabelsOut = self._call(
            "labels", params={"q": q, "model_version": model_version, "limit": limit}
        )
        return labels

    def similar_to_moment(self, moment_id: int, *, limit: int = 10) -> SimilarPage:
        """Windows most like this moment's best window (cosine of clip embeddings), best first."""
        page: SimilarPage = self._call(
            "similar_to_moment", path={"moment_id": str(moment_id)}, params={"limit": limit}
        )
        return page

    def similar_to_window(
        self,
        video_id: uuid.UUID | str,
        window_index: int,
        *,
        model_version: str | None = None,
        limit: int = 10,
    ) -> SimilarPage:
        """Windows most like this window of this video, best first."""
        page: SimilarPage = self._call(
            "similar_to_window",
            path={"video_id": str(video_id), "window_index": str(window_index)},
            params={"model_version": model_version, "limit": limit},
        )
        return page

    def similar_to_clip(self, path: Path, *, limit: int = 10) -> SimilarPage:
        """Windows most like a short clip, which the platform samples and embeds with its model."""
        with path.open("rb") as f:
            page: SimilarPage = self._call(
                "similar_to_clip", params={"limit": limit}, files={"file": (path.name, f, "video/mp4")}
            )
        return page

    def thumbnail(
        self, video_id: uuid.UUID | str, window_index: int, *, model_version: str | None = None
    ) -> bytes:
        """A window's thumbnail (JPEG bytes): the frame of its clip the model saw in the middle."""
        body: bytes = self._call(
            "thumbnail",
            path={"video_id": str(video_id), "window_index": str(window_index)},
            params={"model_version": model_version},
        )
        return body

    # Backfills.

    def start_backfill(self, request: BackfillRequest) -> BackfillOut:
        backfill: BackfillOut = self._call("start_backfill", json=request)
        return backfill

    def backfill(self, backfill_id: uuid.UUID | str) -> BackfillOut:
        backfill: BackfillOut = self._call("backfill", path={"backfill_id": str(backfill_id)})
        return backfill

    def cancel_backfill(self, backfill_id: uuid.UUID | str) -> BackfillOut:
        backfill: BackfillOut = self._call("cancel_backfill", path={"backfill_id": str(backfill_id)})
        return backfill

    def wait_backfill(
        self,
        backfill_id: uuid.UUID | str,
        *,
        timeout_s: float | None = None,
        poll_s: float = 1.0,
        on_update: Callable[[BackfillOut], None] | None = None,
    ) -> BackfillOut:
        """Poll the backfill until it has completed, failed or been cancelled."""
        for row in _polled(lambda: self.backfill(backfill_id), timeout_s, poll_s, f"backfill {backfill_id}"):
            if on_update is not None:
                on_update(row)
            if row.status in FINISHED_BACKFILL:
                return row
        raise AssertionError("unreachable")

    # Model versions.

    def reindex(self, request: ReindexRequest) -> BackfillOut:
        """Index the videos ``request.where`` selects under the served version ``request.model``; a
        backfill of kind reindex (``backfill``, ``wait_backfill``, ``cancel_backfill`` follow it)."""
        row: BackfillOut = self._call("reindex", json=request)
        return row

    def compare(
        self,
        a: str,
        b: str,
        *,
        video_ids: list[uuid.UUID] | None = None,
        limit: int = 100,
    ) -> ComparisonOut:
        """What changed from model version ``a`` to ``b`` (each ``NAME:VERSION``)."""
        ids = [str(v) for v in video_ids] if video_ids else None
        result: ComparisonOut = self._call(
            "compare", params={"a": a, "b": b, "video_id": ids, "limit": limit}
        )
        return result

    # The caller's tenant, and administration (admin scope).

    def tenant(self) -> OwnTenantOut:
        """This key's tenant: its S3 allow-list and the secret its webhooks are signed with."""
        tenant: OwnTenantOut = self._call("tenant")
        return tenant

    def keys(self) -> KeysOut:
        keys: KeysOut = self._call("keys")
        return keys

    def create_key(self, request: KeyRequest) -> NewKeyOut:
        key: NewKeyOut = self._call("create_key", json=request)
        return key

    def revoke_key(self, key_id: uuid.UUID | str) -> KeyOut:
        key: KeyOut = self._call("revoke_key", path={"key_id": str(key_id)})
        return key

    def rotate_key(self, key_id: uuid.UUID | str, *, grace_s: float = 86400.0) -> NewKeyOut:
        key: NewKeyOut = self._call(
            "rotate_key", path={"key_id": str(key_id)}, json=RotateRequest(grace_s=grace_s)
        )
        return key

    def set_s3_allow(self, tenant: str, patterns: list[str] | None) -> TenantOut:
        """The tenant's S3 allow-list (``bucket/key-glob`` patterns); None: the deployment default."""
        out: TenantOut = self._call(
            "set_s3_allow", path={"name": tenant}, json=AllowListRequest(s3_allow=patterns)
        )
        return out


def _search(
    label: str | Sequence[str],
    min_score: float,
    model_version: str | None,
    cursor: str | None,
    limit: int,
    model: str | None = None,
) -> dict[str, Any]:
    return {
        "label": label if isinstance(label, str) else list(label),
        "min_score": min_score,
        "model_version": model_version,
        "cursor": cursor,
        "limit": limit,
        "model": model,
    }


def _polled(read: Callable[[], Model], timeout_s: float | None, poll_s: float, what: str) -> Iterator[Model]:
    """``read()`` every ``poll_s`` until the caller stops; ``WaitTimeoutError`` after ``timeout_s``."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        yield read()
        if deadline is not None and time.monotonic() > deadline:
            raise WaitTimeoutError(f"{what} still running after {timeout_s} s")
        time.sleep(poll_s)
