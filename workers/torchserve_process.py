"""A TorchServe on free loopback ports, started and stopped by infra/scripts/torchserve.sh.

For measurements and tests that need a private, real model server beside the one a deployment runs.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.core.config import Settings

SCRIPT = Path(__file__).resolve().parents[1] / "infra" / "scripts" / "torchserve.sh"


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on loopback right now (all held open until all are chosen)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


class TorchServeProcess:
    """A TorchServe for ``archive`` on ports chosen once: ``stop()`` and ``start()`` again serve on the
    same addresses (a restart as clients see it)."""

    def __init__(
        self,
        archive: Path,
        run_dir: Path,
        *,
        batch_size: int,
        max_batch_delay_ms: int,
        workers: int = 1,
        model_name: str = "tsm",
    ) -> None:
        self.archive = archive
        self.run_dir = run_dir
        inference, management, metrics, grpc_i, grpc_m = free_ports(5)
        self.values = {
            "TSMINDEX_TORCHSERVE_INFERENCE_URL": f"http://127.0.0.1:{inference}",
            "TSMINDEX_TORCHSERVE_MANAGEMENT_URL": f"http://127.0.0.1:{management}",
            "TSMINDEX_TORCHSERVE_METRICS_URL": f"http://127.0.0.1:{metrics}",
            "TSMINDEX_TORCHSERVE_GRPC_INFERENCE_PORT": str(grpc_i),
            "TSMINDEX_TORCHSERVE_GRPC_MANAGEMENT_PORT": str(grpc_m),
            "TSMINDEX_INFERENCE_BATCH_SIZE": str(batch_size),
            "TSMINDEX_TORCHSERVE_MAX_BATCH_DELAY_MS": str(max_batch_delay_ms),
            "TSMINDEX_TORCHSERVE_WORKERS": str(workers),
            "TSMINDEX_MODEL_NAME": model_name,
        }
        self.settings = Settings(
            torchserve_inference_url=self.values["TSMINDEX_TORCHSERVE_INFERENCE_URL"],
            torchserve_management_url=self.values["TSMINDEX_TORCHSERVE_MANAGEMENT_URL"],
            torchserve_metrics_url=self.values["TSMINDEX_TORCHSERVE_METRICS_URL"],
            torchserve_token=None,  # read from the run directory's key file
            torchserve_key_file=run_dir / "key_file.json",
            inference_batch_size=batch_size,
            model_name=model_name,
        )

    def _env(self) -> dict[str, str]:
        return {**os.environ, **self.values, "TSMINDEX_TORCHSERVE_RUN_DIR": str(self.run_dir)}

    def start(self, *, timeout_s: float = 600) -> None:
        _script("start", str(self.archive), env=self._env(), timeout_s=timeout_s)

    def stop(self, *, timeout_s: float = 120) -> None:
        _script("stop", env=self._env(), timeout_s=timeout_s)


@contextmanager
def served(
    archive: Path,
    run_dir: Path,
    *,
    batch_size: int,
    max_batch_delay_ms: int,
    workers: int = 1,
    model_name: str = "tsm",
    start_timeout_s: float = 600,
    stop_timeout_s: float = 120,
) -> Iterator[Settings]:
    """Serve ``archive`` from ``run_dir`` until the block ends; yields the client's settings."""
    server = TorchServeProcess(
        archive,
        run_dir,
        batch_size=batch_size,
        max_batch_delay_ms=max_batch_delay_ms,
        workers=workers,
        model_name=model_name,
    )
    server.start(timeout_s=start_timeout_s)
    try:
        yield server.settings
    finally:
        server.stop(timeout_s=stop_timeout_s)


def _script(command: str, *args: str, env: dict[str, str], timeout_s: float) -> None:
    result = subprocess.run(
        [str(SCRIPT), command, *args], env=env, capture_output=True, text=True, timeout=timeout_s
    )
    if result.returncode != 0:
        raise RuntimeError(f"torchserve.sh {command} failed:\n{result.stdout}\n{result.stderr}")
