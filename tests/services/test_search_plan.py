"""Label search stays an index range scan on a large index (Postgres)."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import and_, or_, select, text

from services.core.db import create_db_engine
from services.core.models import Video, VideoLabel

VIDEOS, LABELS_PER_VIDEO, VOCABULARY = 20_000, 20, 400


def _plan_nodes(plan: dict[str, object]) -> list[dict[str, object]]:
    nodes = [plan]
    for child in plan.get("Plans", []):  # type: ignore[attr-defined]
        nodes += _plan_nodes(child)
    return nodes


def test_search_uses_the_label_score_index(migrated_postgres_url: str) -> None:
    engine = create_db_engine(migrated_postgres_url)
    version = f"plan-{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        # 400 000 label rows: one per (video, label) for 20 of the 400 labels per video.
        conn.execute(
            text(
                "INSERT INTO videos (id, sha256, created_at) "
                "SELECT md5(:v || i)::uuid, md5(:v || i) || md5(:v || i), now() FROM generate_series(1, :n) i"
            ),
            {"v": version, "n": VIDEOS},
        )
        conn.execute(
            text(
                "INSERT INTO video_labels"
                " (video_id, model_name, model_version, label, label_index, score, rank)"
                " SELECT md5(:v || i)::uuid, 'tsm', :v, 'label ' || ((i * 7 + r * 20) % :k),"
                " (i * 7 + r * 20) % :k, random(), r"
                " FROM generate_series(1, :n) i, generate_series(1, :per) r"
            ),
            {"v": version, "n": VIDEOS, "per": LABELS_PER_VIDEO, "k": VOCABULARY},
        )
        conn.execute(text("ANALYZE videos"))
        conn.execute(text("ANALYZE video_labels"))

        # The API's query for a second page (keyset cursor), as SQL.
        query = (
            select(VideoLabel, Video)
            .join(Video, Video.id == VideoLabel.video_id)
            .where(VideoLabel.label == "label 7", VideoLabel.score >= 0.2)
            .where(or_(VideoLabel.score < 0.9, and_(VideoLabel.score == 0.9, VideoLabel.id < 10**9)))
            .order_by(VideoLabel.score.desc(), VideoLabel.id.desc())
            .limit(51)
        )
        compiled = query.compile(engine, compile_kwargs={"literal_binds": True})
        raw = conn.execute(text(f"EXPLAIN (FORMAT JSON) {compiled}")).scalar_one()
    engine.dispose()
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    nodes = _plan_nodes(plan)
    scans = [n for n in nodes if n.get("Relation Name") == "video_labels"]
    assert [n["Index Name"] for n in scans] == ["ix_video_labels_label_score_id"]
    assert not any(n["Node Type"] == "Sort" for n in nodes)  # rows come out of the index in order
