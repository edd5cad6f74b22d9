"""The ingest API and the core shared by the API and the workers."""
