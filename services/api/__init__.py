"""The HTTP ingest API (FastAPI)."""
