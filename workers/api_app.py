"""The API as served: ``services.api.main.create_app`` with the clip embedder wired in.

The API package never imports the workers; this entry point (``tsmindex api``, uvicorn's factory
``workers.api_app:create_app``) gives it the model it needs for search by uploaded clip.
"""

from __future__ import annotations

from fastapi import FastAPI

from services.api.main import create_app as create_api
from services.core.config import Settings, get_settings
from workers.clip_query import ClipEmbedder
from workers.indexing.context import build_classifier


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    return create_api(settings, clip_embedder=ClipEmbedder(settings, build_classifier(settings)))
