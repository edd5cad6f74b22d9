"""Plumbing shared by the API and the workers: settings, database, storage, metrics."""
