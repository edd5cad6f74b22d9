"""Registering what a model server serves (``services.core.served``), from the server's own model:
a TorchServe archive as ``stack.sh`` starts it, or the checkpoint an in-process worker loads."""

from __future__ import annotations

from pathlib import Path

from model_store.tsm import ModelCard
from services.core.config import Settings
from services.core.db import create_db_engine, session_factory
from services.core.served import Preprocessing, register
from services.core.versions import ModelVersion


def register_card(settings: Settings, model: ModelVersion, card: ModelCard, *, server: str) -> ModelVersion:
    """Record ``model`` (cut clips as ``card`` says) as the served default of its name."""
    preprocessing = Preprocessing(card.config.num_segments, card.preprocess.resize, card.preprocess.crop)
    engine = create_db_engine(settings.resolved_database_url)
    try:
        with session_factory(engine).begin() as session:
            register(session, model, preprocessing, server=server)
    finally:
        engine.dispose()
    return model


def register_archive(settings: Settings, archive: Path) -> ModelVersion:
    """The archive's (name, version) as TorchServe serves it."""
    from model_store.archive import read_served_model

    name, version, card = read_served_model(archive)
    return register_card(settings, ModelVersion(name, version), card, server="torchserve")


def register_checkpoint(settings: Settings, checkpoint: Path) -> ModelVersion:
    """An in-process worker's model: ``TSMINDEX_MODEL_NAME`` at its card's version."""
    from model_store.tsm import read_card

    card = read_card(checkpoint)
    return register_card(settings, ModelVersion(settings.model_name, card.version), card, server="inprocess")
