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


def test_openmp_threads_wait_passively_unless_the_user_chose() -> None:
    code = (
        "import os\n"
        "from workers.allocator import apply_thread_policy\n"
        "apply_thread_policy()\n"
        "import torch\n"
        "print(os.environ['OMP_WAIT_POLICY'])\n"
    )
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    for env, want in ((base, "PASSIVE"), ({**base, "OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE")):
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == want
