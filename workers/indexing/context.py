"""What a pipeline run needs, built once per process (worker init or CLI command)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from services.core.config import Settings
from services.core.db import db_engine, session_factory
from services.core.storage import ObjectStorage, make_storage, s3_client
from workers.indexing.breaker import Breaker
from workers.inference import ClipClassifier


@dataclass
class PipelineContext:
    settings: Settings
    sessions: sessionmaker[Session]
    storage: ObjectStorage
    classifier: ClipClassifier
    on_progress: Callable[[uuid.UUID, float], None] | None = None
    breaker: Breaker | None = None  # only for a model server over the network
    _s3: Any = field(default=None, repr=False)

    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = s3_client(self.settings)
        return self._s3

    def close(self) -> None:
        self.classifier.close()
        bind = self.sessions.kw.get("bind")
        if bind is not None:
            bind.dispose()


def build_classifier(settings: Settings) -> ClipClassifier:
    from workers.inference import InProcessEngine, TorchServeClient

    if settings.inference_backend == "torchserve":
        return TorchServeClient(settings)
    if settings.inference_backend == "inprocess":
        return InProcessEngine.from_settings(settings)
    raise ValueError(f"unknown inference backend {settings.inference_backend!r}")


def build_context(settings: Settings, *, classifier: ClipClassifier | None = None) -> PipelineContext:
    """Engine, sessions, storage, inference backend (and its breaker) for one process."""
    from workers.inference import TorchServeClient

    classifier = classifier or build_classifier(settings)
    breaker = None
    if isinstance(classifier, TorchServeClient):
        breaker = Breaker(probe=classifier.ping, probe_s=settings.breaker_probe_s)
    return PipelineContext(
        settings=settings,
        sessions=session_factory(db_engine(settings)),
        storage=make_storage(settings),
        classifier=classifier,
        breaker=breaker,
    )
