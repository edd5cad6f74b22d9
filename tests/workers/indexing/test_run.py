from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from services.core.config import Settings
from services.core.indexing.errors import DatabaseUnavailableError
from tests.platform_servers import free_port
from workers.indexing.breaker import Breaker
from workers.indexing.context import build_context
from workers.indexing.run import run_job


class _Unused:
    """A classifier the test never reaches."""

    def classify(self, clips: Any, *, top_k: int = 5, with_embedding: bool = False, model: Any = None) -> Any:
        raise AssertionError("not reached")

    def close(self) -> None:
        pass


def test_a_database_down_at_claim_raises_a_retryable_error(tmp_path: Path) -> None:
    """The claim used to run outside the error handling: a plain OperationalError, and the task
    dropped the message. Now it is DatabaseUnavailableError, which the task retries."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path,
        database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing",
    )
    ctx = build_context(settings, classifier=_Unused())
    with pytest.raises(DatabaseUnavailableError, match="at claim"):
        run_job(uuid.uuid4(), ctx)
    ctx.close()


def test_the_breaker_waits_for_the_probe_and_gives_up_at_its_limit() -> None:
    answers = [False, False, True]
    clock = [0.0]

    def sleep(s: float) -> None:
        clock[0] += s

    breaker = Breaker(probe=lambda: answers.pop(0), probe_s=5.0, clock=lambda: clock[0], sleep=sleep)
    assert breaker.wait_closed(1.0) and answers == [False, False, True]  # closed: no probe
    breaker.trip()
    assert not breaker.wait_closed(7.0)  # two probes fail within 7 s
    assert breaker.is_open and clock[0] == 5.0
    assert breaker.wait_closed(60.0) and not breaker.is_open
    assert answers == [] and clock[0] == 5.0
