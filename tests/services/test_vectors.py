"""Window embeddings: pgvector (HNSW, cosine) and the exact numpy search behind one interface."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from services.core.db import create_db_engine, session_factory, upgrade_database
from services.core.models import IndexedWindow, Video
from services.core.vectors import (
    HNSW_PREFIX,
    EmbeddingError,
    ExactStore,
    ModelKey,
    PgVectorStore,
    WindowRef,
    embedding_of,
    nearest_sql,
    to_fp16,
    vector_store,
)
from tests.pgvector_server import *  # noqa: F403

DIMS = 64
WINDOWS = 300


@pytest.fixture()
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'tsmindex.db'}")
    upgrade_database(engine)
    yield engine
    engine.dispose()


@pytest.fixture()
def pgvector_engine(pgvector_url: str) -> Iterator[Engine]:
    engine = create_db_engine(pgvector_url)
    yield engine
    engine.dispose()


def _fill(session: Session, model: ModelKey, vectors: np.ndarray) -> uuid.UUID:
    """One video whose windows have these embeddings, written as the pipeline writes them."""
    video = Video(sha256=uuid.uuid4().hex * 2, filename="v.mp4")
    session.add(video)
    session.flush()
    key = {"video_id": video.id, "model_name": model.name, "model_version": model.version}
    session.add_all(
        IndexedWindow(**key, window_index=n, start_ms=n * 1000, end_ms=(n + 1) * 1000, top_labels=[])
        for n in range(len(vectors))
    )
    session.flush()
    vector_store(session).write(session, model=model, video_id=video.id, vectors=dict(enumerate(vectors)))
    return video.id


def test_pgvector_and_the_exact_search_rank_the_same_windows(
    sqlite_engine: Engine, pgvector_engine: Engine
) -> None:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((WINDOWS, DIMS)).astype(np.float32)
    query = rng.standard_normal(DIMS).astype(np.float32)
    model = ModelKey("tsm", f"v-{uuid.uuid4().hex[:6]}")
    answers = {}
    for name, engine, store in (
        ("exact", sqlite_engine, ExactStore),
        ("pgvector", pgvector_engine, PgVectorStore),
    ):
        with session_factory(engine).begin() as session:
            assert isinstance(vector_store(session), store)
            video = _fill(session, model, vectors)
            found = vector_store(session).nearest(session, model=model, query=query, k=10)
            answers[name] = [(n.window_index, n.score) for n in found]
            # The stored vector reads back as its fp16 rounding; the query window leaves its answer.
            stored = embedding_of(session, model=model, window=WindowRef(video, 3))
            assert stored is not None and np.array_equal(stored, to_fp16(vectors[3]).astype(np.float32))
            like_3 = vector_store(session).nearest(
                session, model=model, query=vectors[3], k=5, exclude=WindowRef(video, 3)
            )
            assert 3 not in [n.window_index for n in like_3] and len(like_3) == 5
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    exact = np.argsort(-(unit @ (query / np.linalg.norm(query))))[:10]
    assert [n for n, _ in answers["exact"]] == [int(i) for i in exact]
    assert [n for n, _ in answers["pgvector"]] == [n for n, _ in answers["exact"]]
    assert [s for _, s in answers["pgvector"]] == pytest.approx([s for _, s in answers["exact"]], abs=1e-4)


def test_a_database_without_pgvector_stores_bytes(migrated_postgres_url: str) -> None:
    engine = create_db_engine(migrated_postgres_url)  # the machine's PostgreSQL: no pgvector package
    try:
        with session_factory(engine).begin() as session:
            assert isinstance(vector_store(session), ExactStore)
            model = ModelKey("tsm", f"v-{uuid.uuid4().hex[:6]}")
            video = _fill(session, model, np.eye(4, dtype=np.float32))
            [best] = vector_store(session).nearest(session, model=model, query=np.array([0, 1, 0, 0.1]), k=1)
            assert (best.video_id, best.window_index) == (video, 1)
    finally:
        engine.dispose()


def test_a_zero_vector_cannot_be_compared() -> None:
    with pytest.raises(EmbeddingError):
        to_fp16(np.zeros(8))


def test_the_nearest_query_on_100k_windows_uses_the_hnsw_index(pgvector_engine: Engine) -> None:
    dims, rows = 32, 100_000
    model = ModelKey("tsm", f"plan-{uuid.uuid4().hex[:6]}")
    started = time.perf_counter()
    with pgvector_engine.begin() as conn:
        video = uuid.uuid4()
        conn.execute(
            text(
                "INSERT INTO videos (id, tenant_id, sha256, created_at)"
                " VALUES (:v, '00000000-0000-0000-0000-000000000000', :sha, now())"
            ),
            {"v": video, "sha": video.hex * 2},
        )
        conn.execute(
            text(
                "INSERT INTO indexed_windows (video_id, model_name, model_version, window_index, start_ms,"
                " end_ms, top_labels, dims, embedding)"
                " SELECT :v, :name, :version, i, i * 10000, (i + 1) * 10000, '[]', :dims,"
                " ARRAY(SELECT random() - 0.5 + i * 0 FROM generate_series(1, :dims))::real[]::halfvec"
                " FROM generate_series(0, :n - 1) i"
            ),
            {"v": video, "name": model.name, "version": model.version, "dims": dims, "n": rows},
        )
    with session_factory(pgvector_engine).begin() as session:
        from services.core.vectors import ensure_hnsw_index

        ensure_hnsw_index(session, dims)
        session.execute(text("ANALYZE indexed_windows"))
    built = time.perf_counter() - started
    query = np.random.default_rng(1).standard_normal(dims)
    with session_factory(pgvector_engine).begin() as session:
        statement = nearest_sql(dims, exclude=True)
        params = {
            "name": model.name,
            "version": model.version,
            "query": "[" + ",".join(str(float(x)) for x in to_fp16(query)) + "]",
            "k": 10,
            "xvideo": video,
            "xn": 0,
        }
        plan = session.execute(text(f"EXPLAIN (FORMAT JSON) {statement.text}"), params).scalar_one()
        hits = PgVectorStore().nearest(session, model=model, query=query, k=10)
    plan = plan if isinstance(plan, list) else json.loads(plan)
    print(f"\n{rows} windows of {dims} dims inserted and indexed in {built:.1f} s; plan:")
    print(json.dumps(plan[0]["Plan"], indent=1))
    assert f"{HNSW_PREFIX}{dims}" in json.dumps(plan)
    assert len(hits) == 10 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
