"""Fixtures for the model tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Run a module's tiny networks on one intra-op thread.

    A second OpenMP thread only adds barrier waits at these sizes, and on shared cores a spinning
    thread that loses its core makes every op wait for the scheduler (10x slower seen).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
