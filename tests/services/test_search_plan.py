"""Label and moment search stay index range scans on large indexes (Postgres)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, Select, text

from services.api.routes.jobs import jobs_query
from services.core import search
from services.core.db import create_db_engine

VIDEOS, LABELS_PER_ROW, VOCABULARY = 20_000, 20, 400
SEGMENTS = 3  # per video and label, for LABELS_PER_ROW // 4 labels


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes += _plan_nodes(child)
    return nodes


def _plan(conn: Connection, engine: Engine, query: Select[Any]) -> list[dict[str, Any]]:
    compiled = query.compile(engine, compile_kwargs={"literal_binds": True})
    raw = conn.execute(text(f"EXPLAIN (FORMAT JSON) {compiled}")).scalar_one()
    return _plan_nodes((json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"])


@pytest.fixture(scope="module")
def populated(migrated_postgres_url: str) -> Iterator[Engine]:
    """400 000 video label rows and 300 000 label segments under one model version."""
    engine = create_db_engine(migrated_postgres_url)
    version = f"plan-{uuid.uuid4().hex[:8]}"
    label = "'label ' || ((i * 7 + r * 20) % :k), (i * 7 + r * 20) % :k, random(), random(), r"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO videos (id, tenant_id, sha256, created_at) SELECT md5(:v || i)::uuid,"
                " '00000000-0000-0000-0000-000000000000', md5(:v || i) || md5(:v || i), now()"
                " FROM generate_series(1, :n) i"
            ),
            {"v": version, "n": VIDEOS},
        )
        conn.execute(
            text(
                "INSERT INTO video_labels"
                " (video_id, model_name, model_version, label, label_index, score, peak_score, rank)"
                f" SELECT md5(:v || i)::uuid, 'tsm', :v, {label}"
                " FROM generate_series(1, :n) i, generate_series(1, :per) r"
            ),
            {"v": version, "n": VIDEOS, "per": LABELS_PER_ROW, "k": VOCABULARY},
        )
        conn.execute(
            text(
                "INSERT INTO label_segments (video_id, model_name, model_version, label, label_index,"
                " start_ms, end_ms, windows, score, mean_score)"
                " SELECT md5(:v || i)::uuid, 'tsm', :v, 'label ' || ((i * 7 + r * 20) % :k),"
                " (i * 7 + r * 20) % :k, w * 10000, (w + 1) * 10000, 1, random(), 0"
                " FROM generate_series(1, :n) i, generate_series(0, :w - 1) w, generate_series(1, :per) r"
            ),
            {"v": version, "n": VIDEOS, "w": SEGMENTS, "per": LABELS_PER_ROW // 4, "k": VOCABULARY},
        )
        conn.execute(
            text(
                "INSERT INTO jobs (id, tenant_id, video_id, model_name, model_version, status, reason,"
                " attempts, progress, options, created_at)"
                " SELECT md5('job' || :v || i)::uuid, '00000000-0000-0000-0000-000000000000',"
                " md5(:v || i)::uuid, 'tsm', :v,"
                " (ARRAY['succeeded', 'failed', 'queued', 'running'])[i % 4 + 1],"
                " CASE WHEN i % 4 = 1 THEN 'corrupt' END, 1, 0, '{}',"
                " now() - i * interval '1 second'"
                " FROM generate_series(1, :n) i"
            ),
            {"v": version, "n": VIDEOS},
        )
        for table in ("videos", "video_labels", "label_segments", "jobs"):
            conn.execute(text(f"ANALYZE {table}"))
    yield engine  # the run's database is dropped at the end of the run
    engine.dispose()


@pytest.mark.parametrize(
    ("hits", "sort", "table", "index"),
    [
        (search.video_hits, "peak", "video_labels", "ix_video_labels_label_peak_score_id"),
        (search.video_hits, "mean", "video_labels", "ix_video_labels_label_score_id"),
        (search.moment_hits, "peak", "label_segments", "ix_label_segments_label_score_id"),
    ],
)
def test_search_pages_come_out_of_the_label_score_index(
    populated: Engine, hits: Any, sort: search.Sort, table: str, index: str
) -> None:
    engine = populated
    # The API's query for a second page (keyset cursor), as SQL.
    page = search.PageRequest("label 7", min_score=0.2, after=search.Cursor(0.9, 10**9), limit=50, sort=sort)
    query = hits(page)
    with engine.connect() as conn:
        nodes = _plan(conn, engine, query)
    scans = [n for n in nodes if n.get("Relation Name") == table]
    assert [n["Index Name"] for n in scans] == [index]
    assert not any("Sort" in n["Node Type"] for n in nodes)  # rows come out of the index in order


@pytest.mark.parametrize(
    ("status", "index"), [("failed", "ix_jobs_status_created_at_id"), (None, "ix_jobs_created_at_id")]
)
def test_job_pages_come_out_of_the_listing_indexes(populated: Engine, status: str | None, index: str) -> None:
    engine = populated
    after = (datetime.now(UTC) - timedelta(hours=1), uuid.UUID(int=0))  # a second page
    with engine.connect() as conn:
        nodes = _plan(conn, engine, jobs_query(status, None, after, 51))
    scans = [n for n in nodes if n.get("Relation Name") == "jobs"]
    assert [n.get("Index Name") for n in scans] == [index]
    assert not any("Sort" in n["Node Type"] for n in nodes)
