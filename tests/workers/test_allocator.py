"""The command line runs under the measured glibc allocator setting, unless told otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

from workers.allocator import GLIBC_NO_TRIM

SHOW = (
    "import os, sys\n"
    "from workers.allocator import reexec_with_allocator_env\n"
    "print(os.getpid(), flush=True)\n"
    "reexec_with_allocator_env()\n"
    "print(os.environ.get('MALLOC_MMAP_MAX_'), os.environ.get('MALLOC_TRIM_THRESHOLD_'))\n"
)


def _run(extra: dict[str, str]) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in (*GLIBC_NO_TRIM, "LD_PRELOAD")}
    env.update(extra)
    out = subprocess.run([sys.executable, "-c", SHOW], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split("\n")


def test_process_reexecutes_itself_with_the_setting() -> None:
    lines = _run({})
    # Two pid lines (the same pid: exec keeps it), then the environment the second run saw.
    assert lines[0] == lines[1]
    assert lines[2] == "0 100000000000"


def test_a_users_allocator_choice_is_left_alone() -> None:
    lines = _run({"MALLOC_MMAP_MAX_": "7"})
    assert lines[1] == "7 None"
