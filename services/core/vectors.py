"""Window embeddings: storing them and finding the windows nearest to an example, by cosine.

One interface, two stores, chosen by what the database's ``indexed_windows.embedding`` column is:

- ``PgVectorStore``: PostgreSQL with pgvector. The column is ``halfvec`` (fp16) of any length;
  each length gets its own partial HNSW index (``halfvec_cosine_ops``), created the first time
  vectors of that length are written, because an HNSW index needs one fixed length.
- ``ExactStore``: fp16 bytes (SQLite in embedded mode, or a PostgreSQL without pgvector), searched
  exactly with numpy in fixed-size batches, so memory stays flat however large the index.

Both round vectors to fp16 before storing and before comparing, so for the same data they rank the
same windows in the same order within float tolerance.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

TABLE = "indexed_windows"
COLUMN = "embedding"
HNSW_PREFIX = "ix_indexed_windows_embedding_hnsw_"
SCAN_BATCH = 4096  # rows per numpy batch in the exact search


@dataclass(frozen=True)
class ModelKey:
    name: str
    version: str


@dataclass(frozen=True)
class WindowRef:
    video_id: uuid.UUID
    window_index: int


@dataclass(frozen=True)
class Neighbour:
    """A window near the query: ``score`` is the cosine similarity (1: same direction)."""

    video_id: uuid.UUID
    window_index: int
    start_ms: int
    end_ms: int
    score: float
    thumbnail_key: str | None


class EmbeddingError(ValueError):
    """A query embedding that cannot be compared (empty, zero, or of a length the index lacks)."""


class VectorStore(Protocol):
    def write(
        self, session: Session, *, model: ModelKey, video_id: uuid.UUID, vectors: Mapping[int, np.ndarray]
    ) -> None:
        """Set the embedding of each window number of ``vectors`` (its row must exist)."""

    def nearest(
        self,
        session: Session,
        *,
        model: ModelKey,
        query: np.ndarray,
        k: int,
        exclude: WindowRef | None = None,
    ) -> list[Neighbour]:
        """The ``k`` windows of ``model`` most similar to ``query``, best first."""


def to_fp16(vector: np.ndarray | Iterable[float]) -> np.ndarray:
    """The stored form: a flat fp16 vector; a zero or empty one cannot be compared by cosine."""
    array = np.asarray(vector, dtype=np.float32).reshape(-1)
    if array.size == 0 or not np.isfinite(array).all() or not np.any(array):
        raise EmbeddingError("an embedding must be a non-zero vector of finite numbers")
    return array.astype(np.float16)


def vector_store(session: Session) -> VectorStore:
    """The store this database supports (see the module docstring)."""
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        udt = session.scalar(
            text(
                "SELECT udt_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = :t AND column_name = :c"
            ),
            {"t": TABLE, "c": COLUMN},
        )
        if udt == "halfvec":
            return PgVectorStore()
    return ExactStore()


def embedding_of(session: Session, *, model: ModelKey, window: WindowRef) -> np.ndarray | None:
    """The stored embedding of one window as float32, or None (no such window, or none stored)."""
    halfvec = isinstance(vector_store(session), PgVectorStore)
    value = session.scalar(
        text(
            f"SELECT {'CAST(embedding AS text)' if halfvec else 'embedding'} FROM {TABLE} "
            "WHERE video_id = :video AND model_name = :name AND model_version = :version "
            "AND window_index = :n AND dims IS NOT NULL"
        ),
        {**_model_params(model), "video": _uuid_param(session, window.video_id), "n": window.window_index},
    )
    if value is None:
        return None
    if halfvec:
        return np.asarray([float(x) for x in str(value).strip("[]").split(",")], dtype=np.float32)
    return np.frombuffer(bytes(value), dtype=np.float16).astype(np.float32)


def managed_outside_models(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic ``include_object``: False for what this module manages outside the ORM models (the
    embedding column, whose type depends on the database, and the per-length HNSW indexes)."""
    if type_ == "column" and name == COLUMN and getattr(getattr(obj, "table", None), "name", None) == TABLE:
        return False
    return not (type_ == "index" and name is not None and name.startswith(HNSW_PREFIX))


def _model_params(model: ModelKey) -> dict[str, Any]:
    return {"name": model.name, "version": model.version}


def _uuid_param(session: Session, value: uuid.UUID) -> Any:
    # SQLAlchemy's Uuid type stores 32 hex digits on SQLite; text() binds need the same form.
    return value.hex if session.get_bind().dialect.name == "sqlite" else value


def _exclude_sql(exclude: WindowRef | None) -> str:
    return " AND NOT (video_id = :xvideo AND window_index = :xn)" if exclude is not None else ""


def _exclude_params(session: Session, exclude: WindowRef | None) -> dict[str, Any]:
    if exclude is None:
        return {}
    return {"xvideo": _uuid_param(session, exclude.video_id), "xn": exclude.window_index}


def _neighbour(row: Any, score: float) -> Neighbour:
    video_id = row.video_id if isinstance(row.video_id, uuid.UUID) else uuid.UUID(str(row.video_id))
    return Neighbour(
        video_id, int(row.window_index), int(row.start_ms), int(row.end_ms), score, row.thumbnail_key
    )


class ExactStore:
    """fp16 bytes in the row; cosine over every window of the model, batch by batch."""

    def write(
        self, session: Session, *, model: ModelKey, video_id: uuid.UUID, vectors: Mapping[int, np.ndarray]
    ) -> None:
        if not vectors:
            return
        params = [
            {
                **_model_params(model),
                "video": _uuid_param(session, video_id),
                "n": n,
                "dims": int(v.size),
                "embedding": to_fp16(v).tobytes(),
            }
            for n, v in vectors.items()
        ]
        session.execute(
            text(
                f"UPDATE {TABLE} SET dims = :dims, embedding = :embedding WHERE video_id = :video "
                "AND model_name = :name AND model_version = :version AND window_index = :n"
            ),
            params,
        )

    def nearest(
        self,
        session: Session,
        *,
        model: ModelKey,
        query: np.ndarray,
        k: int,
        exclude: WindowRef | None = None,
    ) -> list[Neighbour]:
        q = to_fp16(query).astype(np.float32)
        q /= np.linalg.norm(q)
        result = session.execute(
            text(
                f"SELECT video_id, window_index, start_ms, end_ms, thumbnail_key, embedding FROM {TABLE} "
                "WHERE model_name = :name AND model_version = :version AND dims = :dims"
                + _exclude_sql(exclude)
            ),
            {**_model_params(model), "dims": int(q.size), **_exclude_params(session, exclude)},
        )
        best: list[tuple[float, Any]] = []
        while rows := result.fetchmany(SCAN_BATCH):
            matrix = np.stack([np.frombuffer(bytes(r.embedding), dtype=np.float16) for r in rows])
            matrix = matrix.astype(np.float32)  # [B, D]
            scores = matrix @ q / np.maximum(np.linalg.norm(matrix, axis=1), 1e-12)
            top = np.argsort(-scores, kind="stable")[:k]
            best = sorted(best + [(float(scores[i]), rows[i]) for i in top], key=lambda x: -x[0])[:k]
        return [_neighbour(row, score) for score, row in best]


class PgVectorStore:
    """pgvector ``halfvec`` with a partial HNSW cosine index per embedding length."""

    def write(
        self, session: Session, *, model: ModelKey, video_id: uuid.UUID, vectors: Mapping[int, np.ndarray]
    ) -> None:
        if not vectors:
            return
        for dims in {int(v.size) for v in vectors.values()}:
            ensure_hnsw_index(session, dims)
        params = [
            {**_model_params(model), "video": video_id, "n": n, "dims": int(v.size), "embedding": _literal(v)}
            for n, v in vectors.items()
        ]
        session.execute(
            text(
                f"UPDATE {TABLE} SET dims = :dims, embedding = CAST(:embedding AS halfvec) "
                "WHERE video_id = :video AND model_name = :name AND model_version = :version "
                "AND window_index = :n"
            ),
            params,
        )

    def nearest(
        self,
        session: Session,
        *,
        model: ModelKey,
        query: np.ndarray,
        k: int,
        exclude: WindowRef | None = None,
    ) -> list[Neighbour]:
        session.execute(text("SET LOCAL hnsw.iterative_scan = strict_order"))
        session.execute(text(f"SET LOCAL hnsw.ef_search = {max(40, min(1000, 2 * k))}"))
        rows = session.execute(
            nearest_sql(int(to_fp16(query).size), exclude is not None),
            {
                **_model_params(model),
                "query": _literal(query),
                "k": k,
                **_exclude_params(session, exclude),
            },
        ).all()
        return [_neighbour(row, 1.0 - float(row.distance)) for row in rows]


def nearest_sql(dims: int, exclude: bool) -> Any:
    """The k-nearest query for one embedding length. ``dims`` is written into the SQL (an int,
    never user text) because the planner matches a partial index only on a literal predicate."""
    vec = f"embedding::halfvec({dims})"
    return text(
        f"SELECT video_id, window_index, start_ms, end_ms, thumbnail_key, "
        f"{vec} <=> CAST(:query AS halfvec({dims})) AS distance FROM {TABLE} "
        f"WHERE dims = {dims} AND model_name = :name AND model_version = :version"
        + (" AND NOT (video_id = :xvideo AND window_index = :xn)" if exclude else "")
        + f" ORDER BY {vec} <=> CAST(:query AS halfvec({dims})) LIMIT :k"
    )


def ensure_hnsw_index(session: Session, dims: int) -> None:
    """The HNSW cosine index for vectors of length ``dims`` (created once; a no-op afterwards)."""
    name = f"{HNSW_PREFIX}{int(dims)}"
    exists = session.scalar(text("SELECT 1 FROM pg_indexes WHERE indexname = :n"), {"n": name})
    if exists:
        return
    # Two writers creating it at once: the transaction-level lock makes the second wait, then skip.
    session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:n))"), {"n": name})
    session.execute(
        text(
            f"CREATE INDEX IF NOT EXISTS {name} ON {TABLE} USING hnsw "
            f"((embedding::halfvec({int(dims)})) halfvec_cosine_ops) WHERE dims = {int(dims)}"
        )
    )


def _literal(vector: np.ndarray) -> str:
    """pgvector's text form of the fp16-rounded vector."""
    return "[" + ",".join(repr(float(x)) for x in to_fp16(vector)) + "]"
