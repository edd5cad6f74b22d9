"""Platform commands: embedded indexing and search, the API, the worker, migrations, demo."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from workers.cli.app import app
from workers.cli.models import ModelOpt, resolve_model_path
from workers.cli.remote import (
    jobs_table,
    remote_client,
    remote_labels,
    search_columns,
    search_rows,
    upload_and_wait,
)

if TYPE_CHECKING:
    from services.client import TsmindexClient
    from services.core import search
    from services.core.config import Settings
    from services.core.indexing.options import IndexOptions
    from workers.embedded import IndexedVideo

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

console = Console()

CheckpointOpt = Annotated[
    Path | None,
    typer.Option(help="model checkpoint (default: TSMINDEX_CHECKPOINT_PATH)", exists=True, dir_okay=False),
]


def _settings() -> Settings:
    from services.core.config import get_settings

    return get_settings()


def _run_index(paths: list[Path], checkpoint: Path, options: Mapping[str, object]) -> list[IndexedVideo]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from workers.embedded import embedded_context, index_files
    from workers.media.files import find_videos

    selection = find_videos(paths)
    for skipped in selection.skipped:
        console.print(
            f"[yellow]skipped[/yellow] {skipped.path}: {skipped.reason} ({skipped.detail})", soft_wrap=True
        )
    files = selection.videos
    if not files:
        console.print("[yellow]no video files found[/yellow]")
        raise typer.Exit(1)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        load = progress.add_task("loading model", total=None)
        current = progress.add_task("", total=1.0, visible=False)

        def on_progress(_job: uuid.UUID, fraction: float) -> None:
            progress.update(current, completed=fraction)

        ctx = embedded_context(_settings(), checkpoint, on_progress=on_progress)
        progress.remove_task(load)
        overall = progress.add_task("videos", total=len(files))

        def on_start(path: Path) -> None:
            progress.update(current, description=f"  {path.name}", completed=0.0, visible=True)

        def on_done(_result: IndexedVideo) -> None:
            progress.advance(overall)

        try:
            results = index_files(ctx, files, options=options, on_file_start=on_start, on_file_done=on_done)
        finally:
            ctx.close()
        progress.update(current, visible=False)
    return results


def _results_table(results: list[IndexedVideo], top: int) -> Table:
    table = Table(title="Indexed videos")
    table.add_column("file")
    table.add_column("status")
    table.add_column("duration", justify="right")
    table.add_column("windows", justify="right")
    table.add_column(f"top labels (mean window probability, top {top})")
    for r in results:
        status = (
            "[green]succeeded[/green]" if r.status == "succeeded" else f"[red]{r.status}: {r.reason}[/red]"
        )
        if r.skipped:
            status += " (already indexed)"
        if r.shortfall_frames:
            status += f" [yellow]{r.shortfall_frames} frames did not decode[/yellow]"
        labels = ", ".join(f"{label} {score:.3f}" for label, score in r.labels[:top])
        duration = f"{r.duration_s:.1f} s" if r.duration_s is not None else "-"
        windows = str(r.windows)
        if r.truncated:
            windows += f" [yellow](truncated: {r.covered_s or 0:.0f} s covered)[/yellow]"
        table.add_row(r.path.name, status, duration, windows, labels)
    return table


@app.command("index")
def index_cmd(
    paths: Annotated[list[Path], typer.Argument(help="video files or folders (searched recursively)")],
    checkpoint: CheckpointOpt = None,
    model: ModelOpt = None,
    window_s: Annotated[float | None, typer.Option(help="window length in seconds")] = None,
    top_k: Annotated[int | None, typer.Option(help="labels kept per video and per window")] = None,
    min_score: Annotated[float | None, typer.Option(help="drop labels scoring less")] = None,
    sampling: Annotated[
        str | None, typer.Option(help="exact (segment centres) or keyframe (default TSMINDEX_SAMPLING)")
    ] = None,
    wait: Annotated[bool, typer.Option(help="with --api: follow the jobs until they end")] = True,
) -> None:
    """Index local videos in this process (SQLite, local storage, in-process inference).

    The model: --checkpoint, else --model, else TSMINDEX_CHECKPOINT_PATH, else the published
    Kinetics-400 TSM-R50 (downloaded once into the model cache; `tsmindex models`).
    With --api URL: upload them to that platform instead, which indexes them with the model it
    serves (--model NAME[:VERSION]: another model it serves)."""
    from pydantic import ValidationError

    from services.core.indexing.options import IndexOptions

    given = {"window_s": window_s, "top_k": top_k, "min_score": min_score, "sampling": sampling}
    try:
        options = IndexOptions.model_validate({k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    if (client := remote_client()) is not None:
        if checkpoint is not None:
            console.print("[red]--api: the platform indexes with the models it serves; drop --checkpoint")
            raise typer.Exit(2)
        _index_remote(client, paths, options, model=model, wait=wait)
        return
    results = _run_index(paths, resolve_model_path(checkpoint, model), options.to_job_options())
    console.print(_results_table(results, top=5))
    if any(r.status != "succeeded" for r in results):
        raise typer.Exit(1)


@app.command("search")
def search_cmd(
    labels: Annotated[list[str], typer.Argument(help="one label or several, e.g. 'juggling balls'")],
    min_score: Annotated[float, typer.Option(help="minimum score (video-level, or per window)")] = 0.0,
    moments: Annotated[bool, typer.Option("--moments", help="where in the videos: runs of windows")] = False,
    sort: Annotated[str, typer.Option(help="videos: peak (best window) or mean")] = "peak",
    match: Annotated[str, typer.Option(help="several labels: any or all")] = "any",
    start_s: Annotated[float | None, typer.Option("--from", help="moments overlapping from (s)")] = None,
    end_s: Annotated[float | None, typer.Option("--to", help="moments overlapping until (s)")] = None,
    limit: Annotated[int, typer.Option(help="rows to show")] = 20,
    model: Annotated[
        str | None, typer.Option("--model", help="only this model, NAME or NAME:VERSION")
    ] = None,
) -> None:
    """Search the index for videos with a label (with --moments, where in them), best score first.

    `tsmindex labels WORD` finds the exact label names."""
    from services.core import search
    from services.core.versions import ModelVersion

    if sort not in search.SORTS or match not in search.MATCHES:
        raise typer.BadParameter(f"--sort is one of {search.SORTS}, --match one of {search.MATCHES}")
    name, version = (
        (model, None) if model is None or ":" not in model else ModelVersion.parse(model).astuple()
    )
    page = search.PageRequest(
        labels,
        min_score=min_score,
        model_version=version,
        limit=limit,
        sort=sort,
        match=match,
        start_ms=None if start_s is None else round(start_s * 1000),
        end_ms=None if end_s is None else round(end_s * 1000),
        model_name=name,
    )
    client = remote_client()
    if client is not None:
        with client:
            rows = search_rows(client, page, moments=moments)
    else:
        rows = _search_rows(page, moments=moments)
    table = Table(title=f"{'Moments' if moments else 'Videos'} labelled {' / '.join(map(repr, labels))}")
    for column in search_columns(moments=moments, several=len(page.labels) > 1):
        numeric = column in ("score", "peak", "mean", "from", "to")
        table.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if not rows:
        raise typer.Exit(1)


def _search_rows(page: search.PageRequest, *, moments: bool) -> list[list[str]]:
    """The rows ``tsmindex search`` prints (see ``search_columns``), read from the local database."""
    from services.core import search
    from services.core.db import create_db_engine, session_factory
    from services.core.models import LabelSegment

    several = len(page.labels) > 1
    engine = create_db_engine(_settings().resolved_database_url)
    hits = search.moment_hits if moments else search.video_hits
    with session_factory(engine)() as session:
        found, _ = search.split_page(session.execute(hits(page)).all(), page)
        rows = []
        for hit, video in found:
            name = video.filename or video.source_uri or "-"
            label = [hit.label] if several else []
            if isinstance(hit, LabelSegment):
                span = [f"{hit.start_ms / 1000:.1f} s", f"{hit.end_ms / 1000:.1f} s"]
                model = f"{hit.model_name}:{hit.model_version}"
                rows.append([f"{hit.score:.3f}", *label, name, *span, model, str(hit.id)])
            else:
                duration = f"{video.duration_s:.1f} s" if video.duration_s is not None else "-"
                scores = [f"{hit.peak_score:.3f}", f"{hit.score:.3f}"]
                rows.append([*scores, *label, name, duration, str(video.id)])
    engine.dispose()
    return rows


@app.command("labels")
def labels_cmd(
    query: Annotated[str | None, typer.Argument(help="part of a label, or a near spelling")] = None,
    limit: Annotated[int, typer.Option(help="rows to show")] = 20,
) -> None:
    """Labels in the index (with QUERY: those that match it, best first) and how many videos have each."""
    from services.core import vocabulary
    from services.core.db import create_db_engine, session_factory

    client = remote_client()
    if client is not None:
        with client:
            found = client.labels(q=query, limit=limit).items
        rows = [(x.label, x.videos, x.match or "") for x in found]
    else:
        engine = create_db_engine(_settings().resolved_database_url)
        with session_factory(engine)() as session:
            known = vocabulary.vocabulary(session)
        engine.dispose()
        if query is None:
            rows = [(label, count, "") for label, count in known[:limit]]
        else:
            rows = [
                (m.label, m.videos, m.kind.name) for m in vocabulary.find_labels(query, known, limit=limit)
            ]
    table = Table(title=f"Labels matching {query!r}" if query else "Labels")
    table.add_column("label")
    table.add_column("videos", justify="right")
    table.add_column("match")
    for label, count, kind in rows:
        table.add_row(label, str(count), kind)
    console.print(table)
    if not rows:
        raise typer.Exit(1)


def _index_remote(
    client: TsmindexClient, paths: list[Path], options: IndexOptions, *, model: str | None, wait: bool
) -> None:
    from workers.media.files import find_videos

    selection = find_videos(paths)
    for skipped in selection.skipped:
        console.print(
            f"[yellow]skipped[/yellow] {skipped.path}: {skipped.reason} ({skipped.detail})", soft_wrap=True
        )
    if not selection.videos:
        console.print("[yellow]no video files found[/yellow]")
        raise typer.Exit(1)
    with client:
        jobs = upload_and_wait(client, selection.videos, options, model=model, wait=wait)
        console.print(jobs_table([(path.name, job) for path, job in jobs], remote_labels(client)))
    if wait and any(job.status != "succeeded" for _, job in jobs):
        raise typer.Exit(1)


@app.command("api")
def api_cmd(
    host: Annotated[str | None, typer.Option(help="default TSMINDEX_API_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default TSMINDEX_API_PORT")] = None,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
) -> None:
    """Serve the HTTP API (uvicorn)."""
    import os

    import uvicorn

    s = _settings()
    if workers > 1:
        # Each uvicorn process counts its own requests; a scrape reaches one of them, so they write
        # their metrics to files that every process sums. Counts of an earlier run are removed first.
        metrics_dir = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(s.data_dir / "api-metrics")))
        metrics_dir.mkdir(parents=True, exist_ok=True)
        for stale in metrics_dir.glob("*.db"):
            stale.unlink()
    uvicorn.run(
        "workers.api_app:create_app",
        factory=True,
        host=host or s.api_host,
        port=port or s.api_port,
        workers=workers,
        proxy_headers=True,
    )


@app.command("reaper")
def reaper_cmd(
    once: Annotated[bool, typer.Option("--once", help="one pass, then exit")] = False,
) -> None:
    """Recover jobs without a human: re-queue jobs whose worker died, re-send lost messages, resume
    stuck backfills, deliver webhooks. Every worker runs this loop too; one runs at a time."""
    import time

    from services.core.queue import create_producer
    from workers.reaping import reaper_pass

    settings = _settings()
    producer = create_producer(settings)
    reap = reaper_pass(settings, producer=producer)
    try:
        while True:
            report = reap()
            console.print(report if report is not None else "another reaper holds the lock")
            if once:
                return
            time.sleep(settings.reaper_interval_s)
    finally:
        producer.close()


@app.command("worker")
def worker_cmd(
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="worker processes")] = 1,
    loglevel: Annotated[str, typer.Option(help="Celery log level")] = "INFO",
) -> None:
    """Run a Celery indexing worker (prefork pool; one job per process at a time)."""
    import os

    # Prefork children share their metrics through files; this must precede prometheus_client's import.
    default_dir = (_settings().data_dir / "worker-metrics").resolve()
    metrics_dir = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(default_dir)))
    metrics_dir.mkdir(parents=True, exist_ok=True)
    from services.core.queue import INDEX_QUEUE
    from workers.celery_app import celery_app

    settings = _settings()
    if settings.inference_backend == "inprocess" and settings.checkpoint_path is not None:
        from workers.served import register_checkpoint

        # These workers are the model server: submitters anywhere key their jobs by this row.
        model = register_checkpoint(settings, settings.checkpoint_path)
        console.print(f"serving {model} in process")

    celery_app.worker_main(
        [
            "worker",
            "--pool=prefork",
            f"--concurrency={concurrency}",
            f"--loglevel={loglevel}",
            "-Q",
            INDEX_QUEUE,
        ]
    )


@db_app.command("upgrade")
def db_upgrade_cmd(revision: Annotated[str, typer.Argument(help="target revision")] = "head") -> None:
    """Apply the database migrations (TSMINDEX_DATABASE_URL)."""
    from sqlalchemy.engine import make_url

    from services.core.db import create_db_engine, upgrade_database

    url = _settings().resolved_database_url
    engine = create_db_engine(url)
    upgrade_database(engine, revision)
    engine.dispose()
    console.print(f"database {make_url(url).render_as_string(hide_password=True)} at {revision}")


@app.command("demo")
def demo_cmd(
    videos: Annotated[int, typer.Option(help="videos to generate")] = 8,
    seed: Annotated[int, typer.Option(help="seed of the generated motion clips")] = 2024,
    checkpoint: CheckpointOpt = None,
) -> None:
    """Generate videos and index them in embedded mode: motion clips labelled by the shipped motion
    model, or, with a model of your own, sample videos."""
    settings = _settings()
    samples = settings.data_dir / "samples"
    model = checkpoint or settings.checkpoint_path
    shipped = model is None
    if model is None:
        from workers.training.shipped import SHIPPED_MODEL, write_demo_clips

        model = SHIPPED_MODEL
        write_demo_clips(samples / "motion", count=videos, seed=seed)
        files = sorted((samples / "motion").glob("*/*.mp4"))
        console.print(
            f"model: the shipped motion model ({model.name}), which knows left/right/up/down; "
            f"{len(files)} new motion clips in {samples / 'motion'}, each named after its true "
            "direction (the model sees only pixels)"
        )
    else:
        from workers.demo import write_sample_videos

        files = write_sample_videos(samples, count=videos)
        console.print(f"generated {len(files)} sample videos in {samples}")
    results = _run_index(files, model, {})
    console.print(_results_table(results, top=3))
    if shipped:
        right = sum(1 for r in results if r.labels and r.labels[0][0] == r.path.parent.name)
        console.print(f"{right}/{len(results)} clips got their true direction as the top label")
    best = next((r.labels[0][0] for r in results if r.labels), None)
    if best is not None:
        console.print(f"next: tsmindex search {best!r}")
    if any(r.status != "succeeded" for r in results):
        raise typer.Exit(1)


@app.command("archive-env", hidden=True)
def archive_env_cmd(archive: Annotated[Path, typer.Argument(exists=True, dir_okay=False)]) -> None:
    """Shell assignments that make workers feed clips the way ARCHIVE's model expects (stack.sh)."""
    import shlex

    from model_store.archive import read_served_model

    _, version, card = read_served_model(archive)
    for name, value in {
        "TSMINDEX_MODEL_VERSION": version,
        "TSMINDEX_NUM_SEGMENTS": card.config.num_segments,
        "TSMINDEX_CLIP_RESIZE": card.preprocess.resize,
        "TSMINDEX_CLIP_CROP": card.preprocess.crop,
    }.items():
        typer.echo(f"export {name}={shlex.quote(str(value))}")
