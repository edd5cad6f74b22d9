"""Which model versions the model servers serve: the truth submissions key their jobs by.

A model server writes its row when it starts (``tsmindex models register ARCHIVE`` for TorchServe,
the worker itself for in-process inference), so an API replica, a ``tsmindex backfill`` from a plain
shell, a cron job or another host submit under the version actually served, whatever their own
environment says. A request may name a model (``NAME`` or ``NAME:VERSION``); one that is not served
is refused at submission with the list of those that are."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.core.config import Settings
from services.core.models import ServedModel, utcnow
from services.core.versions import ModelVersion


class ModelNotServedError(LookupError):
    """A submission named a model version that no model server serves."""

    def __init__(self, requested: str, served: list[ModelVersion]) -> None:
        self.requested, self.served = requested, served
        listed = ", ".join(str(m) for m in served) or "none"
        super().__init__(f"model {requested!r} is not served; served: {listed}")


@dataclass(frozen=True)
class Preprocessing:
    """How workers cut clips for one model: what its card says."""

    num_segments: int
    clip_resize: int
    clip_crop: int


def register(
    session: Session,
    model: ModelVersion,
    preprocessing: Preprocessing,
    *,
    server: str,
    default: bool = True,
) -> ServedModel:
    """Record that ``model`` is served (the caller commits); as the default version of its name, it
    replaces the others."""
    if default:
        session.execute(
            update(ServedModel)
            .where(ServedModel.name == model.name, ServedModel.is_default)
            .values(is_default=False)
        )
    row = session.get(ServedModel, (model.name, model.version)) or ServedModel(
        name=model.name, version=model.version
    )
    row.is_default, row.server, row.registered_at = default, server, utcnow()
    row.num_segments = preprocessing.num_segments
    row.clip_resize, row.clip_crop = preprocessing.clip_resize, preprocessing.clip_crop
    session.add(row)
    return row


def served(session: Session, name: str | None = None) -> list[ModelVersion]:
    """The registered versions (of ``name``), each name's default first, then newest first."""
    query = select(ServedModel.name, ServedModel.version).order_by(
        ServedModel.name, ServedModel.is_default.desc(), ServedModel.registered_at.desc()
    )
    if name is not None:
        query = query.where(ServedModel.name == name)
    return [ModelVersion(n, v) for n, v in session.execute(query).tuples()]


def resolve(session: Session, settings: Settings, requested: str | None = None) -> ModelVersion:
    """The model version a submission indexes with: ``requested`` (``NAME`` or ``NAME:VERSION``),
    else the deployment's model (``TSMINDEX_MODEL_NAME``), at the version its server registered.

    A name no server has registered keeps the settings' version (embedded mode, or servers that
    predate the registry). ``ModelNotServedError`` for anything else."""
    if requested is not None and ":" in requested:
        asked = ModelVersion.parse(requested)
        name, version = asked.name, asked.version
    else:
        name, version = requested or settings.model_name, ""
    versions = served(session, name)
    if not versions and name == settings.model_name:
        versions = [ModelVersion(name, settings.model_version)]
    for candidate in versions:
        if not version or candidate.version == version:
            return candidate
    raise ModelNotServedError(requested or name, served(session) or versions)


def preprocessing(session: Session, settings: Settings, model: ModelVersion) -> Preprocessing:
    """How to cut clips for ``model``: its registry row, else the settings."""
    row = session.get(ServedModel, (model.name, model.version))
    if row is None:
        return Preprocessing(settings.num_segments, settings.clip_resize, settings.clip_crop)
    return Preprocessing(row.num_segments, row.clip_resize, row.clip_crop)
