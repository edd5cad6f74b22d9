"""Exporting a finished backfill's results as JSON Lines next to its sources."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from services.core.backfills.definition import BackfillFilters, parse_prefix_uri, utcnow
from services.core.backfills.listing import ListedObject
from services.core.models import (
    Backfill,
    Job,
    LabelSegment,
    SourceObject,
    Video,
    VideoLabel,
    WindowLabel,
    label_rows,
)

EXPORT_CHUNK = 500  # videos per database read while exporting


def _labels(rows: Sequence[VideoLabel] | Sequence[WindowLabel]) -> list[dict[str, Any]]:
    return [{"label": r.label, "index": r.label_index, "score": r.score} for r in rows]


def _listed_results(session: Session, backfill: Backfill) -> list[Any]:
    """(key, ETag, job, video) of every object this backfill listed and accepted, whoever indexed
    it: its own jobs, jobs it adopted (submitted through the API), and objects an earlier backfill
    had already recorded (those rows keep the earlier backfill's id). For a key seen in several
    versions, the latest recorded up to the end of this backfill's listing."""
    filters = BackfillFilters.from_dict(backfill.filters)
    seen_until = backfill.listed_at or utcnow()
    found = session.execute(
        select(SourceObject, Job, Video)
        .join(Job, SourceObject.job_id == Job.id)
        .join(Video, Job.video_id == Video.id)
        .where(
            SourceObject.bucket == backfill.bucket,
            SourceObject.key.startswith(backfill.prefix, autoescape=True),
            SourceObject.model_name == backfill.model_name,
            SourceObject.model_version == backfill.model_version,
            or_(SourceObject.backfill_id == backfill.id, SourceObject.created_at <= seen_until),
        )
        .order_by(SourceObject.key, SourceObject.id.desc())
    ).all()
    rows: list[Any] = []
    last_key = None
    for obj, job, video in found:
        if obj.key == last_key:
            continue  # an older version of the same key
        last_key = obj.key
        listed = ListedObject(obj.key, obj.etag, obj.size_bytes, obj.last_modified)
        if filters.accepts(listed):
            rows.append((obj.key, obj.etag, job, video))
    return rows


def export_results(sessions: sessionmaker[Session], s3: Any, backfill_id: uuid.UUID) -> int:
    """Write one JSON Lines object per video of this backfill under its output prefix, named after
    the source key (``<output prefix><key>.jsonl``): a first line with the video's status, labels
    and segments (where each label happens), then one line per window. Idempotent (objects are
    overwritten); returns the count."""
    with sessions() as session:
        backfill = session.get_one(Backfill, backfill_id)
        if backfill.output_uri is None:
            return 0
        out_bucket, out_prefix = parse_prefix_uri(backfill.output_uri)
        model = {"name": backfill.model_name, "version": backfill.model_version}
        rows = _listed_results(session, backfill)
    written = 0
    for start in range(0, len(rows), EXPORT_CHUNK):
        chunk = rows[start : start + EXPORT_CHUNK]
        ids = [video.id for _, _, _, video in chunk]
        with sessions() as session:
            of_model = (ids, model["name"], model["version"])
            video_labels: dict[uuid.UUID, list[VideoLabel]] = {}
            for vl in session.scalars(label_rows(VideoLabel, *of_model)):
                video_labels.setdefault(vl.video_id, []).append(vl)
            windows: dict[uuid.UUID, dict[int, list[WindowLabel]]] = {}
            for wl in session.scalars(label_rows(WindowLabel, *of_model)):
                windows.setdefault(wl.video_id, {}).setdefault(wl.window_index, []).append(wl)
            segments: dict[uuid.UUID, list[LabelSegment]] = {}
            for segment in session.scalars(label_rows(LabelSegment, *of_model)):
                segments.setdefault(segment.video_id, []).append(segment)
        for source_key, etag, job, video in chunk:
            head = {
                "source_uri": video.source_uri,
                "etag": etag,
                "status": job.status,
                "reason": job.reason,
                "model": model,
                "duration_s": video.duration_s,
                "labels": _labels(video_labels.get(video.id, [])),
                "segments": [
                    {
                        "label": g.label,
                        "start_ms": g.start_ms,
                        "end_ms": g.end_ms,
                        "windows": g.windows,
                        "score": g.score,
                        "mean_score": g.mean_score,
                    }
                    for g in segments.get(video.id, [])
                ],
            }
            lines = [head] + [
                {"window": index, "start_ms": ws[0].start_ms, "end_ms": ws[0].end_ms, "labels": _labels(ws)}
                for index, ws in sorted(windows.get(video.id, {}).items())
            ]
            body = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()
            s3.put_object(
                Bucket=out_bucket,
                Key=f"{out_prefix}{source_key}.jsonl",
                Body=body,
                ContentType="application/x-ndjson",
            )
            written += 1
    with sessions.begin() as session:
        session.get_one(Backfill, backfill_id).exported_at = utcnow()
    return written
