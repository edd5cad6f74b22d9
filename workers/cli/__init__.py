"""The ``tsmindex`` command line.

Each command group lives in its own module and registers itself on the shared apps in
``workers.cli.app``; importing the modules here is what puts them on the command line. Heavy
imports (torch, av) happen inside the commands so that ``tsmindex --help`` stays fast.
"""

from workers.cli.app import app, bench_app, main

__all__ = ["app", "bench_app", "main"]

# Command modules (each adds its commands to ``app`` or ``bench_app`` on import).
from workers.cli import serving  # noqa: E402,F401
from workers.cli import bench_decode  # noqa: E402,F401
from workers.cli import training  # noqa: E402,F401
from workers.cli import platform  # noqa: E402,F401
from workers.cli import backfill  # noqa: E402,F401
from workers.cli import status  # noqa: E402,F401
