"""A circuit breaker on the model server: once a run finds it unreachable, this process takes no
new job until a probe (TorchServe's ``/ping``) answers, instead of burning jobs on an outage."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Breaker:
    def __init__(
        self,
        *,
        probe: Callable[[], bool],
        probe_s: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._probe = probe
        self._probe_s = probe_s
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._open = False

    @property
    def is_open(self) -> bool:
        return self._open

    def trip(self) -> None:
        if not self._open:
            log.warning("model server unreachable: taking no new job until it answers")
        self._open = True

    def wait_closed(self, max_wait_s: float) -> bool:
        """Block while open, probing every ``probe_s``, at most ``max_wait_s``; True once closed."""
        deadline = self._clock() + max_wait_s
        while self._open:
            with self._lock:
                if self._probe():
                    log.info("model server answers again")
                    self._open = False
                    break
            if self._clock() + self._probe_s > deadline:
                return False
            self._sleep(self._probe_s)
        return True
