"""``tsmindex bench platform``: whole-pipeline throughput against the bound its parts set.

Generated videos (``workers.benchmarks.decode.BENCH_VIDEOS``: 720p/1080p, 1 s and long GOPs, phone-
like grain) go through the worker's pipeline (``run_job``: fetch, streamed decode and inference,
store in the database) against a real TorchServe on loopback serving TSM with random weights. In the
same run it measures the two parts alone: bare decode (``sample_clips`` on every video) and bare
inference (the same clips posted to the same TorchServe). The bound is the slower of the two rates;
the pipeline's clips/s over it says how much overlap and hand-offs lose. On one CPU host decode and
inference share the cores, so the run also reports the bound where their times add up. Jobs are
submitted through the job domain layer in this process: the HTTP API and the Celery hop are not in
the timed path.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

Progress = Callable[[str], None]
STAGES = ("fetch", "decode", "inference", "store")


@dataclass(frozen=True)
class PlatformBenchConfig:
    videos: tuple[str, ...] = ("720p-gop30", "720p-gop300", "1080p-60s", "1080p-60s-gop300")
    work_dir: Path = Path("var/bench/decode")
    arch: str = "resnet50"
    crop: int = 224
    batch_size: int = 8
    max_batch_delay_ms: int = 50
    window_s: float = 10.0
    paths: tuple[Path, ...] = ()  # videos of one's own instead of the generated ones
    num_segments: int = 8
    database_url: str | None = None  # default: a SQLite file in a temporary directory
    workers: int = 2  # jobs run at once, as a worker with --concurrency 2 runs them


def _stage_sums() -> dict[str, float]:
    from services.core import metrics

    sums = dict.fromkeys(STAGES, 0.0)
    for sample in next(iter(metrics.STAGE_SECONDS.collect())).samples:
        stage = sample.labels.get("stage")
        if sample.name.endswith("_sum") and stage in sums:
            sums[stage] = sample.value
    return sums


def _bench_model(config: PlatformBenchConfig) -> tuple[Any, Any]:
    import torch

    from model_store.tsm import (
        KINETICS400_LABELS_PATH,
        ModelCard,
        Preprocess,
        TSMConfig,
        build_from_card,
        read_labels,
    )

    classes = read_labels(KINETICS400_LABELS_PATH)
    card = ModelCard(
        name=f"tsm-{config.arch}-bench",
        version="bench",
        config=TSMConfig(arch=config.arch, num_classes=len(classes), num_segments=config.num_segments),
        preprocess=Preprocess(resize=round(config.crop * 256 / 224), crop=config.crop),
        classes=classes,
    )
    torch.manual_seed(0)
    return build_from_card(card).eval(), card


def bare_decode(videos: Sequence[Path], card: Any, window_s: float) -> tuple[list[Any], float]:
    """Every video's clips and the seconds decoding them took."""
    from workers.media import sample_clips

    clips: list[Any] = []
    started = time.perf_counter()
    for path in videos:
        sampled = sample_clips(
            path,
            num_segments=card.config.num_segments,
            window_s=window_s,
            resize=card.preprocess.resize,
            crop=card.preprocess.crop,
        )
        clips += [c.frames for c in sampled.clips]
    return clips, time.perf_counter() - started


def bare_inference(clips: Sequence[Any], ts_settings: Any) -> tuple[float, float]:
    """(seconds, mean clips per handler batch) for ``clips`` posted to TorchServe."""
    from workers.benchmarks.serve import handler_counts
    from workers.inference import TorchServeClient

    with TorchServeClient(ts_settings) as client:
        client.classify(clips[:1])  # warm-up
        batches, served = handler_counts(ts_settings)
        started = time.perf_counter()
        client.classify(list(clips))
        seconds = time.perf_counter() - started
    return seconds, _fill(ts_settings, batches, served, len(clips))


def _fill(ts_settings: Any, batches_before: float, clips_before: float, clips: int) -> float:
    from workers.benchmarks.serve import handler_counts

    deadline = time.monotonic() + 5.0  # a batch's metrics line may trail its responses
    while True:
        batches, served = handler_counts(ts_settings)
        if served >= clips_before + clips or time.monotonic() > deadline:
            return (served - clips_before) / max(batches - batches_before, 1.0)
        time.sleep(0.2)


def pipeline(
    videos: Sequence[Path], ts_settings: Any, card: Any, config: PlatformBenchConfig, tmp: Path
) -> dict[str, Any]:
    """Index every video through ``run_job`` with TorchServe and a database."""
    from services.core.config import Settings
    from services.core.db import create_db_engine, upgrade_database
    from workers.benchmarks.serve import handler_counts
    from workers.indexing.context import build_context

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp,
        database_url=config.database_url or f"sqlite:///{tmp / 'bench.db'}",
        inference_backend="torchserve",
        torchserve_inference_url=ts_settings.torchserve_inference_url,
        torchserve_management_url=ts_settings.torchserve_management_url,
        torchserve_metrics_url=ts_settings.torchserve_metrics_url,
        torchserve_key_file=ts_settings.torchserve_key_file,
        model_name=ts_settings.model_name,
        model_version=card.version,
        num_segments=card.config.num_segments,
        clip_resize=card.preprocess.resize,
        clip_crop=card.preprocess.crop,
        window_s=config.window_s,
        # One batch per chunk: inference starts as soon as a batch has decoded.
        clip_chunk_windows=config.batch_size,
    )
    upgrade_database(create_db_engine(settings.resolved_database_url))
    ctx = build_context(settings)
    before = _stage_sums()
    batches, served = handler_counts(ts_settings)
    try:
        started = time.perf_counter()
        results = _index_concurrently(ctx, videos, config.workers)
        seconds = time.perf_counter() - started
    finally:
        ctx.close()
    after = _stage_sums()
    clips = sum(r.windows for r in results)
    return {
        "seconds": seconds,
        "videos": len(results),
        "succeeded": sum(r.status == "succeeded" for r in results),
        "clips": clips,
        "stage_s": {s: after[s] - before[s] for s in STAGES},
        "mean_batch": _fill(ts_settings, batches, served, clips),
    }


def _index_concurrently(ctx: Any, videos: Sequence[Path], workers: int) -> list[Any]:
    """Submit every video, then run the jobs ``workers`` at a time."""
    from concurrent.futures import ThreadPoolExecutor

    from workers.embedded import describe, submit_file
    from workers.indexing.run import run_job

    jobs = [(path, *submit_file(ctx, path)) for path in videos]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda job: run_job(job[1], ctx), [j for j in jobs if j[2]]))
    return [describe(ctx, path, job_id) for path, job_id, _ in jobs]


def run(config: PlatformBenchConfig, progress: Progress) -> dict[str, Any]:
    from model_store.archive import build_archive
    from workers.benchmarks.decode import BENCH_VIDEOS, ensure_video
    from workers.torchserve_process import served

    specs = [] if config.paths else [v for v in BENCH_VIDEOS if v.name in config.videos]
    videos = list(config.paths)
    for spec in specs:
        progress(f"generating {spec.name}")
        videos.append(ensure_video(spec, config.work_dir))
    model, card = _bench_model(config)
    tmp = Path(tempfile.mkdtemp(prefix="tsm-bench-platform-"))
    try:
        progress("building the archive")
        archive = build_archive(model, card, tmp / "model-store", model_name="tsm")
        progress("starting TorchServe")
        with served(
            archive,
            tmp / "torchserve",
            batch_size=config.batch_size,
            max_batch_delay_ms=config.max_batch_delay_ms,
        ) as ts_settings:
            progress("bare decode")
            clips, decode_s = bare_decode(videos, card, config.window_s)
            progress(f"bare inference of {len(clips)} clips")
            infer_s, infer_batch = bare_inference(clips, ts_settings)
            progress("the pipeline")
            run_ = pipeline(videos, ts_settings, card, config, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    decode_rate, infer_rate = len(clips) / decode_s, len(clips) / infer_s
    bound = min(decode_rate, infer_rate)
    shared = 1.0 / (1.0 / decode_rate + 1.0 / infer_rate)
    pipeline_rate = run_["clips"] / run_["seconds"]
    return {
        "config": {**asdict(config), "work_dir": str(config.work_dir)},
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "videos": [asdict(s) for s in specs] or [str(p) for p in config.paths],
        "bare": {
            "clips": len(clips),
            "decode_s": decode_s,
            "decode_clips_per_s": decode_rate,
            "inference_s": infer_s,
            "inference_clips_per_s": infer_rate,
            "inference_batch_fill": infer_batch / config.batch_size,
        },
        "pipeline": {
            **run_,
            "videos_per_s": run_["videos"] / run_["seconds"],
            "clips_per_s": pipeline_rate,
            "batch_fill": run_["mean_batch"] / config.batch_size,
        },
        "bound": {"clips_per_s": bound, "set_by": "decode" if decode_rate <= infer_rate else "inference"},
        "ratio_to_bound": pipeline_rate / bound,
        # Where decode and inference share the same cores (one CPU host), neither can run at its
        # bare rate while the other works: their times add up.
        "shared_cores_bound_clips_per_s": shared,
        "ratio_to_shared_cores_bound": pipeline_rate / shared,
    }
