"""The indexing pipeline as stages: claim -> fetch -> sample -> classify -> store -> notify.

``run.run_job`` orchestrates them for the Celery task and embedded mode alike; every job state
change goes through ``services.core.indexing.jobs``.
"""
