"""``tsmindex job ID...``: jobs' states, and with --wait their ends; on the local database or, with
--api, on a remote platform."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from workers.cli.app import app
from workers.cli.remote import api_errors, jobs_table, remote_client, remote_labels

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from services.api.schemas import JobOut, LabelOut

console = Console()


@app.command("job")
def job_cmd(
    job_ids: Annotated[list[str], typer.Argument(help="job ids (as the upload or `index --api` printed)")],
    wait: Annotated[bool, typer.Option(help="follow the jobs until each has succeeded or failed")] = False,
    timeout: Annotated[
        float | None, typer.Option(help="with --wait: give up after this many seconds")
    ] = None,
) -> None:
    """Show jobs (with --wait, once they have ended); exits 1 if one failed or is unknown."""
    client = remote_client()
    if client is not None:
        with client, api_errors():
            jobs = [client.wait(j, timeout_s=timeout, poll_s=0.5) if wait else client.job(j) for j in job_ids]
            console.print(jobs_table([(str(j.video_id), j) for j in jobs], remote_labels(client)))
    else:
        jobs = _local_jobs(job_ids, wait=wait, timeout_s=timeout)
    if any(j.status != "succeeded" for j in jobs):
        raise typer.Exit(1)


def _local_jobs(job_ids: list[str], *, wait: bool, timeout_s: float | None) -> list[JobOut]:
    import time
    import uuid

    from services.api.routes.jobs import job_out
    from services.core.config import get_settings
    from services.core.db import create_db_engine, session_factory
    from services.core.models import Job

    ids = [uuid.UUID(j) for j in job_ids]
    engine = create_db_engine(get_settings().resolved_database_url)
    sessions = session_factory(engine)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while True:
            with sessions() as session:
                rows = [session.get(Job, i) for i in ids]
                missing = [str(i) for i, row in zip(ids, rows, strict=True) if row is None]
                if missing:
                    console.print(f"[red]no such job: {', '.join(missing)}[/red]")
                    raise typer.Exit(1)
                jobs = [job_out(row) for row in rows if row is not None]
            ended = all(j.status in ("succeeded", "failed") for j in jobs)
            if not wait or ended or (deadline is not None and time.monotonic() > deadline):
                break
            time.sleep(0.5)
        console.print(jobs_table([(str(j.video_id), j) for j in jobs], _db_labels(sessions)))
    finally:
        engine.dispose()
    return jobs


def _db_labels(sessions: sessionmaker[Session]) -> Callable[[JobOut], list[LabelOut]]:
    from services.api.schemas import LabelOut
    from services.core.models import VideoLabel, label_rows

    def labels(job: JobOut) -> list[LabelOut]:
        with sessions() as session:
            rows = session.scalars(label_rows(VideoLabel, [job.video_id], job.model.name, job.model.version))
            return [LabelOut(label=r.label, index=r.label_index, score=r.score, rank=r.rank) for r in rows]

    return labels
