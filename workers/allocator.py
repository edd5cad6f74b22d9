"""The glibc allocator setting and the OpenMP wait policy every inference process runs with.

Measured by ``tsmindex bench model`` (ResNet-50, 8x224, batch 16, bf16): glibc's default returns big
activation buffers with munmap/trim after every batch and faults fresh zeroed pages in for the next;
turning that off gave 1.86x videos/s, jemalloc 0.99x. glibc reads these variables once, at process
start, so the command line re-executes itself with them when they are missing.

OpenMP threads sleep instead of spinning between parallel regions (``OMP_WAIT_POLICY=PASSIVE``):
`tsmindex bench threads` on 2 cores, decode processes beside inference, gave the best pipeline rate
with passive waits and no oversubscription (README "Threads"); spinning threads steal the decoders'
cores. libgomp reads it when torch loads, so setting it before the first torch import is enough.
"""

from __future__ import annotations

import os
import platform
import sys

GLIBC_NO_TRIM = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000"}
THREAD_POLICY = {"OMP_WAIT_POLICY": "PASSIVE"}


def apply_thread_policy() -> None:
    """``THREAD_POLICY`` unless the environment chose otherwise; call before torch is imported."""
    for key, value in THREAD_POLICY.items():
        os.environ.setdefault(key, value)


def reexec_with_allocator_env() -> None:
    """Replace this process with itself under ``GLIBC_NO_TRIM`` unless the environment sets any
    allocator variable already (a user's choice, or the re-executed process itself)."""
    if platform.libc_ver()[0] != "glibc" or any(k in os.environ for k in (*GLIBC_NO_TRIM, "LD_PRELOAD")):
        return
    os.environ.update(GLIBC_NO_TRIM)
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
