"""The ``tsmindex`` command line.

Each command group lives in its own module and registers itself on the shared apps in
``workers.cli.app``; importing the modules here is what puts them on the command line. Heavy
imports (torch, av) happen inside the commands so that ``tsmindex --help`` stays fast.
"""

from workers.cli import (  # noqa: F401  (imported for their registrations)
    apikeys,
    backfill,
    bench_decode,
    bench_faults,
    bench_int8,
    bench_model,
    bench_online,
    bench_platform,
    bench_sampling,
    bench_threads,
    compare,
    corpus,
    curate,
    export,
    jobs,
    models,
    platform,
    quantize,
    reindex,
    serving,
    similar,
    status,
    training,
    versions,
    watch,
)
from workers.cli.app import app, bench_app, main

__all__ = ["app", "bench_app", "main"]
