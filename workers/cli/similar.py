"""``tsmindex similar``: the moments most like a clip file, a moment, or a window of a video."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from workers.cli.app import app
from workers.cli.models import ModelOpt, resolve_model_path
from workers.cli.remote import api_errors, remote_client

if TYPE_CHECKING:
    from services.api.schemas import SimilarPage
    from services.client import TsmindexClient
    from services.core.similar import SimilarHit

console = Console()


@app.command("similar")
def similar_cmd(
    query: Annotated[
        str, typer.Argument(help="a clip file, a moment id (from search --moments), or a video id")
    ],
    window: Annotated[int | None, typer.Option(help="with a video id: which of its windows")] = None,
    limit: Annotated[int, typer.Option(help="rows to show")] = 10,
    checkpoint: Annotated[
        Path | None, typer.Option(help="model that embeds a clip file", dir_okay=False)
    ] = None,
    model: ModelOpt = None,
    thumbnails: Annotated[
        Path | None, typer.Option(help="write each hit's thumbnail (JPEG) into this folder", file_okay=False)
    ] = None,
) -> None:
    """The windows most like QUERY, by cosine similarity of clip embeddings: their video, start,
    end and score. A clip file is sampled as one window and embedded by the indexing model."""
    client = remote_client()
    if client is not None:
        with client, api_errors():
            page = _remote(client, query, window, limit)
            rows = _rows_from_page(page)
            if thumbnails is not None:
                images = [
                    client.thumbnail(h.video_id, h.window_index, model_version=h.model.version)
                    if h.thumbnail_url
                    else None
                    for h in page.items
                ]
                _write_thumbnails(thumbnails, rows, images)
    else:
        rows = _local(query, window, limit, checkpoint, model, thumbnails)
    table = Table(title=f"Moments like {query}" + (f" window {window}" if window is not None else ""))
    for column in ("score", "video", "window", "from", "to", "video id"):
        table.add_column(column, justify="right" if column in ("score", "window", "from", "to") else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if not rows:
        raise typer.Exit(1)


def _remote(client: TsmindexClient, query: str, window: int | None, limit: int) -> SimilarPage:
    if window is not None:
        return client.similar_to_window(query, window, limit=limit)
    if Path(query).is_file():
        return client.similar_to_clip(Path(query), limit=limit)
    return client.similar_to_moment(_moment_id(query), limit=limit)


def _write_thumbnails(folder: Path, rows: list[list[str]], images: list[bytes | None]) -> None:
    """``NN-<video id>-<window>.jpg`` per hit that has a thumbnail, NN its rank."""
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for rank, (row, image) in enumerate(zip(rows, images, strict=True), start=1):
        if image is not None:
            (folder / f"{rank:02d}-{row[-1]}-{row[2]}.jpg").write_bytes(image)
            written += 1
    console.print(f"{written} thumbnails in {folder}")


def _local(
    query: str,
    window: int | None,
    limit: int,
    checkpoint: Path | None,
    model: str | None,
    thumbnails: Path | None = None,
) -> list[list[str]]:
    from services.core import similar
    from services.core.config import get_settings
    from services.core.db import create_db_engine, session_factory

    settings = get_settings()
    try:
        if window is None and Path(query).is_file():
            hits = _local_clip(Path(query), limit, resolve_model_path(checkpoint, model))
        else:
            engine = create_db_engine(settings.resolved_database_url)
            try:
                with session_factory(engine)() as session:
                    if window is not None:
                        hits = similar.similar_to_window(
                            session,
                            video_id=_video_id(query),
                            window_index=window,
                            model_version=None,
                            k=limit,
                        )
                    else:
                        hits = similar.similar_to_moment(session, moment_id=_moment_id(query), k=limit)
            finally:
                engine.dispose()
    except similar.SimilarError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    rows = _rows_from_hits(hits)
    if thumbnails is not None:
        _local_thumbnails(thumbnails, rows, hits)
    return rows


def _local_thumbnails(folder: Path, rows: list[list[str]], hits: list[SimilarHit]) -> None:
    from services.core.config import get_settings
    from services.core.storage import make_storage

    storage = make_storage(get_settings())
    keys = [h.neighbour.thumbnail_key for h in hits]
    _write_thumbnails(folder, rows, [storage.read_bytes(key) if key else None for key in keys])


def _local_clip(path: Path, limit: int, checkpoint: Path) -> list[SimilarHit]:
    from services.core import similar
    from services.core.config import get_settings
    from workers.clip_query import ClipEmbedder
    from workers.embedded import embedded_context

    ctx = embedded_context(get_settings(), checkpoint)
    try:
        model_key, vector = ClipEmbedder(ctx.settings, ctx.classifier)(path)
        with ctx.sessions() as session:
            hits = similar.similar_to_vector(session, model=model_key, vector=vector, k=limit)
    finally:
        ctx.close()
    return hits


def _moment_id(text: str) -> int:
    if not text.isdigit():
        raise typer.BadParameter(f"{text!r} is neither a file nor a moment id")
    return int(text)


def _video_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError as exc:
        raise typer.BadParameter(f"--window needs a video id, not {text!r}") from exc


def _row(
    score: float, name: str | None, window: int, start_ms: int, end_ms: int, video_id: uuid.UUID
) -> list[str]:
    span = [f"{start_ms / 1000:.1f} s", f"{end_ms / 1000:.1f} s"]
    return [f"{score:.3f}", name or "-", str(window), *span, str(video_id)]


def _rows_from_hits(hits: list[SimilarHit]) -> list[list[str]]:
    return [
        _row(
            h.neighbour.score,
            h.filename,
            h.neighbour.window_index,
            h.neighbour.start_ms,
            h.neighbour.end_ms,
            h.neighbour.video_id,
        )
        for h in hits
    ]


def _rows_from_page(page: SimilarPage) -> list[list[str]]:
    return [_row(h.score, h.filename, h.window_index, h.start_ms, h.end_ms, h.video_id) for h in page.items]
