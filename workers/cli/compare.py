"""``tsmindex compare A B``: what changed between two model versions, on the local database or,
with --api, on a remote platform."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from workers.cli.app import app
from workers.cli.remote import api_errors, remote_client

if TYPE_CHECKING:
    from services.api.schemas import ComparisonOut

console = Console()


@app.command("compare")
def compare_cmd(
    a: Annotated[str, typer.Argument(help="the old version, NAME:VERSION (e.g. tsm:1)")],
    b: Annotated[str, typer.Argument(help="the new version, NAME:VERSION")],
    video: Annotated[list[uuid.UUID] | None, typer.Option(help="only this video id (repeat)")] = None,
    limit: Annotated[int, typer.Option(help="changed videos listed")] = 20,
) -> None:
    """Labels gained and lost per video, moments that moved, and how often the versions agree."""
    client = remote_client()
    if client is not None:
        with client, api_errors():
            result = client.compare(a, b, video_ids=video, limit=limit)
    else:
        result = _local(a, b, video, limit)
    console.print(_figures(result))
    if result.videos:
        console.print(_changes(result))


def _local(a: str, b: str, video: list[uuid.UUID] | None, limit: int) -> ComparisonOut:
    from services.api.routes.compare import comparison_out
    from services.core.compare import compare_versions
    from services.core.config import get_settings
    from services.core.db import create_db_engine, session_factory
    from services.core.versions import ModelVersion, ModelVersionError

    try:
        versions = ModelVersion.parse(a), ModelVersion.parse(b)
    except ModelVersionError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    engine = create_db_engine(get_settings().resolved_database_url)
    try:
        with session_factory(engine)() as session:
            found = compare_versions(session, a=versions[0], b=versions[1], video_ids=video)
    finally:
        engine.dispose()
    return comparison_out(found, limit)


def _figures(r: ComparisonOut) -> Table:
    table = Table(title=f"{r.a.name}:{r.a.version} -> {r.b.name}:{r.b.version}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("videos compared (indexed by both)", str(r.compared))
    table.add_row("indexed only by a / only by b", f"{r.only_a} / {r.only_b}")
    table.add_row("top-1 agreement", f"{r.top1_agreement * 100:.1f} %")
    table.add_row("mean Jaccard of label sets", f"{r.mean_jaccard:.3f}")
    table.add_row("videos changed", str(r.changed))
    table.add_row("moments moved", str(r.moments_moved))
    return table


def _changes(r: ComparisonOut) -> Table:
    table = Table(title=f"Changed videos (first {len(r.videos)} of {r.changed})")
    for column in ("video", "top label", "gained", "lost", "moments"):
        table.add_column(column)
    for v in r.videos:
        moments = [
            f"{m.label} {m.start_shift_ms / 1000:+.1f}/{m.end_shift_ms / 1000:+.1f} s" for m in v.moved
        ]
        moments += [f"+{m.label} {m.start_ms / 1000:.1f}-{m.end_ms / 1000:.1f} s" for m in v.appeared]
        moments += [f"-{m.label} {m.start_ms / 1000:.1f}-{m.end_ms / 1000:.1f} s" for m in v.vanished]
        top = v.top_a if v.top_a == v.top_b else f"{v.top_a} -> {v.top_b}"
        table.add_row(str(v.video_id), top or "-", ", ".join(v.gained), ", ".join(v.lost), "; ".join(moments))
    return table
