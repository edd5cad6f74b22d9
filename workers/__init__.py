"""Celery app and tasks, the media pipeline, the embedded pipeline and the command line."""
