"""The worker exporter's bookkeeping in multiprocess mode: children summed, a SIGKILLed child's live
gauge dropped while its counters stay, files of earlier runs deleted at start.

Multiprocess mode is chosen when prometheus_client is imported, so the scenario runs in a fresh
interpreter with PROMETHEUS_MULTIPROC_DIR set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCENARIO = r"""
import json, os, signal
from pathlib import Path

from services.core import metrics
from workers.monitoring import WorkerCollector, multiprocess_enabled, remove_stale_files

path = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])


def totals():
    out = {}
    for family in WorkerCollector(path).collect():
        for sample in family.samples:
            if sample.name in ("tsmindex_jobs_in_flight", "tsmindex_clips_inferred_total"):
                out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


children = []
for clips in (3, 4):
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        metrics.init_series()
        metrics.JOBS_IN_FLIGHT.inc()
        metrics.CLIPS_INFERRED.inc(clips)
        os.write(ready_w, b"x")
        signal.pause()
    os.read(ready_r, 1)
    children.append(pid)
running = totals()
os.kill(children[0], signal.SIGKILL)
os.waitpid(children[0], 0)
one_killed = totals()
removed = remove_stale_files(path, keep_pid=os.getpid())
after_restart = totals()
os.kill(children[1], signal.SIGKILL)
os.waitpid(children[1], 0)
print(json.dumps({"enabled": multiprocess_enabled(), "running": running, "one_killed": one_killed,
                  "removed": removed, "after_restart": after_restart}))
"""


def test_children_are_summed_and_dead_ones_leave_no_live_gauge(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", SCENARIO],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["enabled"] is True
    assert result["running"] == {"tsmindex_jobs_in_flight": 2, "tsmindex_clips_inferred_total": 7}
    # The killed child ran no shutdown hook: its job no longer counts as in flight, its clips still do.
    assert result["one_killed"] == {"tsmindex_jobs_in_flight": 1, "tsmindex_clips_inferred_total": 7}
    # At worker start only the main process's own files survive (the children are earlier runs').
    assert result["removed"] >= 2
    assert result["after_restart"] == {"tsmindex_jobs_in_flight": 0, "tsmindex_clips_inferred_total": 0}
