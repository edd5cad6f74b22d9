"""One platform of real processes for the whole fault suite (starting TorchServe, PostgreSQL and the
rest takes a while); each test gets it running and healthy, submits jobs of its own and judges only
those."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from workers.benchmarks.harness.clips import ClipMaker
from workers.benchmarks.harness.platform import Platform, build_motion_archive, start_model_server


@pytest.fixture(scope="session")
def fault_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    base = tmp_path_factory.mktemp("faults")
    archive = build_motion_archive(base / "model-store")
    model_server = start_model_server(archive, base / "torchserve")
    platform = Platform(base / "platform", model_server, archive)
    try:
        platform.start()
        yield platform
    finally:
        platform.close()
        model_server.stop()


@pytest.fixture(scope="session")
def clip_maker(tmp_path_factory: pytest.TempPathFactory) -> ClipMaker:
    return ClipMaker(tmp_path_factory.mktemp("fault-clips"))


@pytest.fixture()
def platform(fault_platform: Platform) -> Platform:
    fault_platform.ensure_running()
    return fault_platform
