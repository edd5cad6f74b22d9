"""The indexing domain: job states and transitions, failure reasons, errors, options, the reaper.

The API, backfills, embedded mode and the workers all change a job through ``jobs``; the job row is
the truth and a broker message is only a wake-up call.
"""
