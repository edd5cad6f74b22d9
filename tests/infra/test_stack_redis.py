"""infra/scripts/stack.sh runs the broker with append-only persistence: what was queued before a
restart of the stack's Redis is there after it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import redis

from workers.benchmarks.harness.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STACK = Path(__file__).resolve().parents[2] / "infra" / "scripts" / "stack.sh"


def _stack(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command_line = ["bash", str(STACK), command]
    result = subprocess.run(command_line, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"stack.sh {command}:\n{result.stdout}\n{result.stderr}"
    return result


def test_the_stack_redis_keeps_its_queue_across_a_restart(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TSMINDEX_")},
        "TSMINDEX_STACK_DIR": str(tmp_path / "stack"),
        "TSMINDEX_STACK_COMPONENTS": "redis",
        "TSMINDEX_STACK_SKIP_SERVICES": "1",
        "TSMINDEX_STACK_ARCHIVE": str(tmp_path / "no-archive.mar"),
        "TSMINDEX_DATA_DIR": str(tmp_path / "var"),
        "TSMINDEX_DATABASE_URL": f"sqlite:///{tmp_path / 'stack.db'}",
        "TSMINDEX_REDIS_URL": f"redis://127.0.0.1:{port}/0",
    }
    _stack("up", env)
    try:
        with redis.Redis(port=port) as client:
            assert client.config_get("appendonly") == {"appendonly": "yes"}
            client.rpush("index", b"job-1", b"job-2")
        _stack("down", env)
        assert (
            "redis: not running"
            in subprocess.run(["bash", str(STACK), "status"], env=env, capture_output=True, text=True).stdout
        )
        _stack("up", env)
        with redis.Redis(port=port) as client:
            assert client.lrange("index", 0, -1) == [b"job-1", b"job-2"]
        assert (tmp_path / "stack" / "redis" / "appendonlydir").is_dir()
    finally:
        _stack("down", env)
