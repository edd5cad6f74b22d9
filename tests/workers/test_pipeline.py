from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from services.core import signing
from services.core.config import Settings
from services.core.db import create_db_engine, upgrade_database
from services.core.models import Job, JobStatus, LabelSegment, Video, VideoLabel, WindowLabel
from services.core.windows import ScoredWindow, aggregate, label_segments
from tests import platform_servers, torchserve_server
from tests.platform_servers import TINY_CROP, TINY_RESIZE, free_port
from tests.workers.media.videos import make_video, zero_packet
from workers.demo import write_sample_videos
from workers.embedded import embedded_context, index_files
from workers.indexing.context import PipelineContext, build_context
from workers.indexing.run import run_job as index_video
from workers.inference import TorchServeClient
from workers.media.corpus import DERIVATIONS

WINDOW_S = 4.0

# The platform's server fixtures (this folder's conftest belongs to the media tests).
pg_database = platform_servers.pg_database
postgres_url = platform_servers.postgres_url
migrated_postgres_url = platform_servers.migrated_postgres_url
tiny_checkpoint = platform_servers.tiny_checkpoint
moto_endpoint = platform_servers.moto_endpoint
s3_bucket = platform_servers.s3_bucket


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_sample_videos(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="module")
def corrupt(videos: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A real MP4 header followed by nothing decodable.
    path = tmp_path_factory.mktemp("bad") / "truncated.mp4"
    path.write_bytes(videos[0].read_bytes()[:1500])
    return path


def _settings(database_url: str, data_dir: Path, checkpoint: Path, **overrides: Any) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        checkpoint_path=checkpoint,
        model_version="resnet18-seed0",
        clip_resize=TINY_RESIZE,
        clip_crop=TINY_CROP,
        window_s=WINDOW_S,
        top_k=3,
        **overrides,
    )


def _migrated(url: str) -> str:
    """``url`` after creating its schema."""
    engine = create_db_engine(url)
    upgrade_database(engine)
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def ctx(request: pytest.FixtureRequest, tmp_path: Path, tiny_checkpoint: Path) -> Iterator[PipelineContext]:
    if request.param == "sqlite":
        url = _migrated(f"sqlite:///{tmp_path / 'tsmindex.db'}")
    else:
        url = request.getfixturevalue("migrated_postgres_url")
    context = build_context(_settings(url, tmp_path, tiny_checkpoint))
    yield context
    context.close()


def _submit(ctx: PipelineContext, path: Path, **options: Any) -> uuid.UUID:
    with ctx.sessions.begin() as session:
        sha = hashlib.sha256(uuid.uuid4().bytes).hexdigest()  # own row per test, whatever the bytes
        video = Video(source_uri=f"file://{path}?{sha[:8]}", filename=path.name, sha256=sha)
        session.add(video)
        session.flush()
        job = Job(
            video_id=video.id,
            model_name="tsm",
            model_version=ctx.settings.model_version,
            options=options,
        )
        session.add(job)
        session.flush()
        return job.id


def _rows(ctx: PipelineContext, job_id: uuid.UUID) -> tuple[Job, list[VideoLabel], list[WindowLabel]]:
    with ctx.sessions() as session:
        job = session.get_one(Job, job_id)
        labels = list(session.scalars(select(VideoLabel).where(VideoLabel.video_id == job.video_id)))
        windows = list(session.scalars(select(WindowLabel).where(WindowLabel.video_id == job.video_id)))
        return job, labels, windows


def _segments(ctx: PipelineContext, job_id: uuid.UUID) -> list[tuple[int, str, int, int]]:
    with ctx.sessions() as session:
        video_id = session.get_one(Job, job_id).video_id
        rows = session.scalars(select(LabelSegment).where(LabelSegment.video_id == video_id)).all()
        return sorted((g.id, g.label, g.start_ms, g.end_ms) for g in rows)


def test_aggregate_is_the_mean_of_window_probabilities() -> None:
    windows = [
        ScoredWindow(0, 0, 4000, [("a", 0, 0.6), ("b", 1, 0.3)]),
        ScoredWindow(1, 4000, 8000, [("b", 1, 0.5), ("c", 2, 0.2)]),
    ]
    assert aggregate(windows) == [("b", 1, 0.4), ("a", 0, 0.3), ("c", 2, 0.1)]


def test_label_segments_join_consecutive_windows_per_label() -> None:
    rows = [
        {
            "window_index": i,
            "start_ms": 4000 * i,
            "end_ms": 4000 * (i + 1),
            "label": label,
            "label_index": n,
            "score": p,
        }
        for i, label, n, p in [
            (3, "a", 0, 0.4),  # unordered on purpose
            (0, "a", 0, 0.9),
            (1, "a", 0, 0.5),
            (1, "b", 1, 0.3),
            (2, "b", 1, 0.6),
            (4, "b", 1, 0.2),
        ]
    ]
    got = sorted(
        (s["label"], s["label_index"], s["start_ms"], s["end_ms"], s["windows"], s["score"], s["mean_score"])
        for s in label_segments(rows)
    )
    assert got == [
        ("a", 0, 0, 8000, 2, 0.9, pytest.approx(0.7)),
        ("a", 0, 12000, 16000, 1, 0.4, 0.4),  # window 2 lacks "a": a new run
        ("b", 1, 4000, 12000, 2, 0.6, pytest.approx(0.45)),
        ("b", 1, 16000, 20000, 1, 0.2, 0.2),
    ]
    assert label_segments([]) == []


def test_index_stores_labels_and_windows(ctx: PipelineContext, videos: list[Path]) -> None:
    long_video = videos[2]  # 12 s: three 4 s windows
    job_id = _submit(ctx, long_video)
    result = index_video(job_id, ctx)
    assert (result.status, result.reason) == ("succeeded", None)

    job, labels, windows = _rows(ctx, job_id)
    # Attempts count failures only.
    assert (job.status, job.attempts, job.progress) == ("succeeded", 0, 1.0)
    assert (job.sampling, job.shortfall_frames, job.shortfall_windows) == ("exact", 0, [])
    assert job.started_at is not None and job.finished_at is not None
    # Every label some window keeps has a video row, ranked by mean; the top_k best means first.
    assert [label.rank for label in sorted(labels, key=lambda x: x.rank)] == list(range(1, len(labels) + 1))
    assert {w.label for w in windows} <= {label.label for label in labels}
    scores = [label.score for label in sorted(labels, key=lambda x: x.rank)]
    assert scores == sorted(scores, reverse=True)
    spans = sorted({(w.window_index, w.start_ms, w.end_ms) for w in windows})
    assert spans == [(0, 0, 4000), (1, 4000, 8000), (2, 8000, 12000)]
    assert len(windows) == 3 * 3  # top_k per window
    with ctx.sessions() as session:
        segments = session.scalars(select(LabelSegment).where(LabelSegment.video_id == job.video_id)).all()
    stored = sorted((g.label, g.start_ms, g.end_ms, g.windows, g.score) for g in segments)
    rows = [
        {c: getattr(w, c) for c in ("window_index", "start_ms", "end_ms", "label", "label_index", "score")}
        for w in windows
    ]
    runs = sorted(
        (g["label"], g["start_ms"], g["end_ms"], g["windows"], g["score"]) for g in label_segments(rows)
    )
    assert stored == runs and sum(g.windows for g in segments) == len(windows)
    with ctx.sessions() as session:
        video = session.get_one(Video, job.video_id)
        assert (video.width, video.height, video.codec, video.duration_s) == (240, 180, "h264", 12.0)
        assert video.size_bytes == long_video.stat().st_size

    # Video-level scores are the mean of the windows' probabilities (labels outside a window's
    # top-k count as 0 there): recompute from an independent in-process run with a wide top-k.
    from workers.media import sample_clips

    sampled = sample_clips(long_video, window_s=WINDOW_S, resize=TINY_RESIZE, crop=TINY_CROP)
    predictions = ctx.classifier.classify([c.frames for c in sampled.clips], top_k=ctx.settings.window_top_k)
    scored = [
        ScoredWindow(i, 0, 0, [(x.label, x.index, x.score) for x in p.labels])
        for i, p in enumerate(predictions)
    ]
    expected = aggregate(scored)[:3]
    got = [(x.label, x.label_index, x.score) for x in sorted(labels, key=lambda x: x.rank)][:3]
    assert [g[:2] for g in got] == [e[:2] for e in expected]
    assert [g[2] for g in got] == pytest.approx([e[2] for e in expected], abs=1e-6)


def test_redelivery_never_duplicates_labels(ctx: PipelineContext, videos: list[Path]) -> None:
    job_id = _submit(ctx, videos[0])
    assert index_video(job_id, ctx).status == "succeeded"
    _, labels, windows = _rows(ctx, job_id)
    before = sorted((x.id, x.label, x.score) for x in labels), sorted((x.id, x.label) for x in windows)
    segments_before = _segments(ctx, job_id)

    # A second delivery of a finished job does nothing.
    assert index_video(job_id, ctx).status == "succeeded"
    # A delivery of the same job that runs the whole pipeline again (as after a lost ack) upserts
    # the same rows in place.
    with ctx.sessions.begin() as session:
        session.get_one(Job, job_id).status = "queued"
    assert index_video(job_id, ctx).status == "succeeded"
    job, labels, windows = _rows(ctx, job_id)
    after = sorted((x.id, x.label, x.score) for x in labels), sorted((x.id, x.label) for x in windows)
    assert after == before
    assert _segments(ctx, job_id) == segments_before and segments_before
    assert job.attempts == 0


def test_options_filter_labels(ctx: PipelineContext, videos: list[Path]) -> None:
    first = _submit(ctx, videos[1])
    index_video(first, ctx)
    _, labels, _ = _rows(ctx, first)
    best = min(labels, key=lambda x: x.rank).label
    job_id = _submit(ctx, videos[1], exclude=[best], top_k=2, min_score=0.0)
    assert index_video(job_id, ctx).status == "succeeded"
    _, labels, windows = _rows(ctx, job_id)
    assert len([x for x in labels if x.rank <= 2]) == 2 and best not in {x.label for x in labels}
    assert best not in {x.label for x in windows}
    only = _submit(ctx, videos[1], include=[best])
    index_video(only, ctx)
    assert {x.label for x in _rows(ctx, only)[1]} == {best}


def test_corrupt_video_fails_with_its_reason_and_the_next_job_runs(
    ctx: PipelineContext, corrupt: Path, videos: list[Path]
) -> None:
    bad = _submit(ctx, corrupt)
    result = index_video(bad, ctx)
    job, labels, _ = _rows(ctx, bad)
    assert (result.status, result.reason) == ("failed", "corrupt")
    assert (job.status, job.reason, job.attempts) == ("failed", "corrupt", 1)
    assert job.detail and labels == []
    assert index_video(_submit(ctx, videos[1]), ctx).status == "succeeded"


def test_a_damaged_frame_is_recorded_and_too_many_fail_the_job_as_corrupt(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    source = make_video(tmp_path / "source.mp4", frames=60, size=(96, 64))
    mjpeg = tmp_path / "clip.avi"
    DERIVATIONS["mjpeg-avi"](source, mjpeg)  # 10 fps, every frame a keyframe
    damaged = zero_packet(mjpeg, tmp_path / "damaged.avi", frame=5)
    outcomes = []
    for limit in (0.25, 0.05):  # 1 of 16 sampled frames is lost: 6 %
        url = _migrated(f"sqlite:///{tmp_path / f'{limit}.db'}")
        ctx = build_context(_settings(url, tmp_path, tiny_checkpoint, max_shortfall_fraction=limit))
        job_id = _submit(ctx, damaged, window_s=3.0)
        result = index_video(job_id, ctx)
        job = _rows(ctx, job_id)[0]
        outcomes.append(
            (result.status, result.reason, job.sampling, job.shortfall_frames, job.shortfall_windows)
        )
        ctx.close()
    assert outcomes == [
        ("succeeded", None, "exact", 1, [0]),
        ("failed", "corrupt", None, None, None),
    ]


def test_missing_source_fails_permanently(ctx: PipelineContext, tmp_path: Path) -> None:
    job_id = _submit(ctx, tmp_path / "gone.mp4")
    assert (index_video(job_id, ctx).reason, _rows(ctx, job_id)[0].status) == ("source_missing", "failed")


def _s3_context(tmp_path: Path, checkpoint: Path, moto_endpoint: str, **overrides: Any) -> PipelineContext:
    url = _migrated(f"sqlite:///{tmp_path / 'tsmindex.db'}")
    settings = _settings(
        url,
        tmp_path,
        checkpoint,
        s3_endpoint_url=moto_endpoint,
        s3_access_key_id=SecretStr("test"),
        s3_secret_access_key=SecretStr("test"),
        **overrides,
    )
    return build_context(settings)


def _s3_job(ctx: PipelineContext, uri: str) -> uuid.UUID:
    with ctx.sessions.begin() as session:
        video = Video(source_uri=uri)
        session.add(video)
        session.flush()
        job = Job(video_id=video.id, model_name="tsm", model_version=ctx.settings.model_version, options={})
        session.add(job)
        session.flush()
        return job.id


def test_s3_source_over_the_size_limit_fails_before_its_download(
    tmp_path: Path, tiny_checkpoint: Path, videos: list[Path], moto_endpoint: str, s3_bucket: str
) -> None:
    body = videos[0].read_bytes()
    s3 = platform_servers.moto_client(moto_endpoint)
    outcomes = []
    for i, limit in enumerate((len(body) - 1, len(body))):
        s3.put_object(Bucket=s3_bucket, Key=f"cam/{i}.mp4", Body=body)
        context = _s3_context(tmp_path, tiny_checkpoint, moto_endpoint, max_upload_bytes=limit)
        result = index_video(_s3_job(context, f"s3://{s3_bucket}/cam/{i}.mp4"), context)
        outcomes.append((result.status, result.reason, result.detail))
        context.close()
    # The limit is checked on the object's size from S3, before any byte is fetched.
    assert outcomes[0] == (
        "failed",
        "too_large",
        f"s3://{s3_bucket}/cam/0.mp4 is {len(body)} bytes; the limit is {len(body) - 1}",
    )
    assert outcomes[1][:2] == ("succeeded", None)


def test_an_s3_source_records_the_version_it_indexed(
    tmp_path: Path, tiny_checkpoint: Path, videos: list[Path], moto_endpoint: str, s3_bucket: str
) -> None:
    s3 = platform_servers.moto_client(moto_endpoint)
    ctx = _s3_context(tmp_path, tiny_checkpoint, moto_endpoint)
    job_id = _s3_job(ctx, f"s3://{s3_bucket}/cam/replaced.mp4")
    seen = []
    for path in (videos[0], videos[2]):  # the object is overwritten with another video in between
        etag = s3.put_object(Bucket=s3_bucket, Key="cam/replaced.mp4", Body=path.read_bytes())["ETag"]
        with ctx.sessions.begin() as session:
            session.get_one(Job, job_id).status = JobStatus.queued  # submitted again
        assert index_video(job_id, ctx).status == "succeeded"
        job, _, windows = _rows(ctx, job_id)
        with ctx.sessions() as session:
            video = session.get_one(Video, job.video_id)
            recorded = (video.source_etag, video.sha256, video.size_bytes)
        assert recorded == (
            etag.strip('"'),
            hashlib.sha256(path.read_bytes()).hexdigest(),
            path.stat().st_size,
        )
        seen.append((recorded, len({w.window_index for w in windows})))
    # The second version's labels replaced the first's: a longer video, more windows.
    assert seen[0][0][0] != seen[1][0][0] and seen[0][1] < seen[1][1]
    ctx.close()


def test_an_outage_defers_the_job_without_burning_attempts_until_its_deadline(
    tmp_path: Path, tiny_checkpoint: Path, videos: list[Path]
) -> None:
    url = _migrated(f"sqlite:///{tmp_path / 'tsmindex.db'}")
    # A TorchServe address where nothing listens: connection refused, a transient error.
    settings = _settings(
        url,
        tmp_path,
        tiny_checkpoint,
        inference_backend="torchserve",
        torchserve_inference_url=f"http://127.0.0.1:{free_port()}",
        torchserve_max_retries=0,
        job_max_attempts=2,
        job_retry_base_s=30.0,
    )
    ctx = build_context(settings, classifier=TorchServeClient(settings))
    job_id = _submit(ctx, videos[0])
    before = datetime.now(UTC)
    result = index_video(job_id, ctx)
    job = _rows(ctx, job_id)[0]
    assert (result.status, result.reason) == ("queued", "inference_unavailable")
    assert (job.status, job.reason, job.attempts, job.deferrals, job.lease_owner) == (
        "queued",
        "inference_unavailable",
        0,
        1,
        None,
    )
    # Backoff with jitter (0.8..1 of the base), under a deadline an hour out.
    retry_at = job.next_attempt_at.replace(tzinfo=UTC) if job.next_attempt_at else None
    assert retry_at is not None
    assert before + timedelta(seconds=24) <= retry_at <= before + timedelta(seconds=31)
    assert job.deadline_at is not None and ctx.breaker is not None and ctx.breaker.is_open
    # A delivery before the retry time does nothing.
    assert index_video(job_id, ctx).status == "not_due"
    # Past its deadline, the next delivery gives up.
    with ctx.sessions.begin() as session:
        row = session.get_one(Job, job_id)
        row.next_attempt_at = row.deadline_at = datetime.now(UTC) - timedelta(seconds=1)
    result = index_video(job_id, ctx)
    assert (result.status, result.reason) == ("failed", "deadline_exceeded")
    assert "inference_unavailable" in (result.detail or "")

    # A job whose worker died mid-run (left "running", its lease expired) counts that run; at the
    # cap it fails as poison.
    poison = _submit(ctx, videos[1])
    with ctx.sessions.begin() as session:
        row = session.get_one(Job, poison)
        row.status, row.attempts, row.lease_owner = "running", 1, "dead-worker"
        row.lease_expires_at = datetime.now(UTC) - timedelta(seconds=1)
    result = index_video(poison, ctx)
    assert (result.status, result.reason) == ("failed", "too_many_attempts")
    assert _rows(ctx, poison)[0].attempts == 2
    ctx.close()


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[bytes, dict[str, str]]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((body, dict(self.headers.items())))
        # The first delivery fails: the pipeline retries.
        self.send_response(503 if len(type(self).received) == 1 else 204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_webhook_is_signed_and_retried(tmp_path: Path, tiny_checkpoint: Path, videos: list[Path]) -> None:
    url = _migrated(f"sqlite:///{tmp_path / 'tsmindex.db'}")
    secret = signing.new_secret()
    ctx = build_context(
        _settings(
            url,
            tmp_path,
            tiny_checkpoint,
            webhook_secret=SecretStr(secret),
            # The receiver runs on loopback over plain http: allowed here only.
            webhook_allow_http=True,
            webhook_allow_networks=["127.0.0.1/32"],
        )
    )
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        job_id = _submit(ctx, videos[0], webhook_url=f"http://127.0.0.1:{server.server_port}/hook")
        assert index_video(job_id, ctx).status == "succeeded"
        # A late duplicate delivery of the finished job notifies nobody again.
        assert index_video(job_id, ctx).status == "succeeded"
        # A poison job failed by its claim notifies its failure at once.
        poison = _submit(ctx, videos[1], webhook_url=f"http://127.0.0.1:{server.server_port}/hook")
        with ctx.sessions.begin() as session:
            row = session.get_one(Job, poison)
            row.status, row.attempts, row.lease_owner = "running", 2, "dead"
        assert index_video(poison, ctx).reason == "too_many_attempts"
    finally:
        server.shutdown()
        ctx.close()
    assert len(_Hook.received) == 3
    assert json.loads(_Hook.received[2][0])["reason"] == "too_many_attempts"
    (_, first_headers), (body, headers) = _Hook.received[:2]
    signing.verify(body, headers, secret)
    assert first_headers["webhook-id"] == headers["webhook-id"]  # a retry is the same delivery
    payload = json.loads(body)
    assert (payload["job_id"], payload["status"], len(payload["labels"])) == (str(job_id), "succeeded", 3)


torchserve = torchserve_server.torchserve


@pytest.mark.integration
def test_embedded_mode_gives_the_served_labels(
    torchserve: torchserve_server.ServedModel, tmp_path: Path, videos: list[Path]
) -> None:
    """`tsmindex index` (in-process engine) and the platform path (TorchServe) agree on every label."""
    embedded = embedded_context(
        Settings(data_dir=tmp_path / "embedded", window_s=WINDOW_S, top_k=5),
        torchserve.checkpoint,
        precision="fp32",
    )
    local = index_files(embedded, videos)
    embedded.close()

    url = f"sqlite:///{tmp_path / 'served.db'}"
    engine = create_db_engine(url)
    upgrade_database(engine)
    engine.dispose()
    settings = torchserve.settings.model_copy(
        update={
            "data_dir": tmp_path / "served",
            "database_url": url,
            # Jobs name the model as TorchServe serves it: their clips go to /predictions/NAME/VERSION.
            "model_name": torchserve.settings.model_name,
            "model_version": torchserve.card_version,
            "num_segments": torchserve.clip_shape[0],
            "clip_resize": 73,
            "clip_crop": torchserve.clip_shape[1],
            "window_s": WINDOW_S,
            "top_k": 5,
        }
    )
    served_ctx = build_context(settings, classifier=TorchServeClient(torchserve.settings))
    served = index_files(served_ctx, videos)
    served_ctx.close()

    assert [r.status for r in local] == [r.status for r in served] == ["succeeded"] * 3
    for here, there in zip(local, served, strict=True):
        assert here.windows == there.windows
        assert [label for label, _ in here.labels] == [label for label, _ in there.labels]
        assert [s for _, s in here.labels] == pytest.approx([s for _, s in there.labels], abs=1e-5)


class _BrokenClassifier:
    """A backend with a defect: it raises something no handler expects."""

    def classify(self, clips: Any, *, top_k: int = 5, with_embedding: bool = False, model: Any = None) -> Any:
        raise ZeroDivisionError("division by zero")

    def close(self) -> None:
        pass


def test_an_unexpected_error_fails_the_job_and_is_raised(
    tmp_path: Path, tiny_checkpoint: Path, videos: list[Path]
) -> None:
    url = _migrated(f"sqlite:///{tmp_path / 'tsmindex.db'}")
    ctx = build_context(_settings(url, tmp_path, tiny_checkpoint), classifier=_BrokenClassifier())
    job_id = _submit(ctx, videos[0])
    with pytest.raises(ZeroDivisionError):
        index_video(job_id, ctx)
    job = _rows(ctx, job_id)[0]
    assert (job.status, job.reason, job.detail) == (
        "failed",
        "internal_error",
        "ZeroDivisionError: division by zero",
    )
    ctx.close()
