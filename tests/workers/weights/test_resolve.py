"""Known models to verified files: downloaded once from the publisher's layout (a local host stands in),
pinned on first use, refused when the bytes change, fast and helpful when offline."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from model_store.tsm import build_tsm
from services.core.config import Settings
from tests.model_host import ReleaseHost, hanging_port, published_r50, release_host
from tests.platform_servers import free_port
from workers.weights import (
    ChecksumMismatchError,
    InvalidWeightsError,
    ModelCache,
    ModelUnavailableError,
    Pin,
    ensure_model,
    find_model,
    mirrored,
)
from workers.weights.registry import WEIGHTS_DIR

__all__ = ["hanging_port", "published_r50", "release_host"]  # fixtures

R50 = find_model("tsm-r50-kinetics400")
assert R50.url is not None
R50_URL: str = R50.url


def _settings(tmp_path: Path, mirror: str, *, connect_timeout_s: float = 3.0) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path / "var",
        model_cache_dir=tmp_path / "cache",
        model_mirror_url=mirror,
        model_connect_timeout_s=connect_timeout_s,
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cache_names(settings: Settings) -> list[str]:
    root = settings.resolved_model_cache_dir
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_the_default_model_downloads_once_and_its_first_digest_is_pinned(
    tmp_path: Path, release_host: ReleaseHost, published_r50: Path
) -> None:
    served = release_host.publish(R50_URL, published_r50)
    settings = _settings(tmp_path, release_host.url)
    assert settings.default_model == R50.name
    seen: list[tuple[int, int | None]] = []

    path = ensure_model(settings.default_model, settings, on_progress=lambda n, t: seen.append((n, t)))
    assert path == settings.resolved_model_cache_dir / R50.filename
    assert path.read_bytes() == published_r50.read_bytes()
    size = published_r50.stat().st_size
    assert seen[-1] == (size, size)
    pin = ModelCache(settings.resolved_model_cache_dir).pin_of(R50.filename)
    assert pin is not None
    want = (_sha256(published_r50), size, R50.url, "first download")
    assert (pin.sha256, pin.size_bytes, pin.url, pin.origin) == want

    assert ensure_model(R50, settings) == path
    assert release_host.gets[served] == 1
    assert _cache_names(settings) == sorted([R50.filename, "pins.json"])


def test_bytes_that_differ_from_the_pin_are_refused_and_nothing_half_written_stays(
    tmp_path: Path, release_host: ReleaseHost, published_r50: Path
) -> None:
    settings = _settings(tmp_path, release_host.url)
    release_host.publish(R50_URL, published_r50)
    path = ensure_model(R50, settings)
    pinned = _sha256(path)

    # The publisher's file changes (another set of weights under the same name).
    other = tmp_path / "other" / R50.filename
    other.parent.mkdir()
    torch.manual_seed(1)
    state = {f"module.{k}": v for k, v in build_tsm("resnet50", num_classes=400).state_dict().items()}
    torch.save({"state_dict": state}, other)
    release_host.publish(R50_URL, other)
    path.unlink()
    with pytest.raises(ChecksumMismatchError) as err:
        ensure_model(R50, settings)
    assert f"sha256 is {_sha256(other)}, expected {pinned}" in str(err.value)
    assert "nothing was kept" in str(err.value)
    assert _cache_names(settings) == ["pins.json"]

    # A cached file altered on disk is refused too.
    shutil.copyfile(published_r50, path)
    with path.open("r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    with pytest.raises(ChecksumMismatchError, match=r"tsmindex models remove tsm-r50-kinetics400"):
        ensure_model(R50, settings)


def test_a_given_digest_is_enforced_on_the_first_download(
    tmp_path: Path, release_host: ReleaseHost, published_r50: Path
) -> None:
    settings = _settings(tmp_path, release_host.url)
    release_host.publish(R50_URL, published_r50)
    cache = ModelCache(settings.resolved_model_cache_dir)
    cache.pin(R50.filename, Pin.now("ab" * 32, size_bytes=None, url=R50.url, origin="given"))
    with pytest.raises(ChecksumMismatchError, match=f"expected {'ab' * 32}"):
        ensure_model(R50, settings)
    assert _cache_names(settings) == ["pins.json"]

    cache.pin(R50.filename, Pin.now(_sha256(published_r50), size_bytes=None, url=R50.url, origin="given"))
    assert ensure_model(R50, settings).read_bytes() == published_r50.read_bytes()
    pin = cache.pin_of(R50.filename)
    assert pin is not None and pin.origin == "given"


def test_a_file_that_is_not_the_listed_network_is_refused_unpinned(
    tmp_path: Path, release_host: ReleaseHost
) -> None:
    settings = _settings(tmp_path, release_host.url)
    wrong = tmp_path / "wrong" / R50.filename
    wrong.parent.mkdir()
    state = {f"module.{k}": v for k, v in build_tsm("resnet18", num_classes=400).state_dict().items()}
    torch.save({"state_dict": state}, wrong)
    release_host.publish(R50_URL, wrong)
    with pytest.raises(InvalidWeightsError, match="the checkpoint looks like resnet18"):
        ensure_model(R50, settings)
    assert _cache_names(settings) == []


def test_a_transfer_cut_short_leaves_nothing(
    tmp_path: Path, release_host: ReleaseHost, published_r50: Path
) -> None:
    from workers.weights import DownloadFailedError

    settings = _settings(tmp_path, release_host.url)
    release_host.truncate.add(release_host.publish(R50_URL, published_r50))
    with pytest.raises(DownloadFailedError, match=r"transfer failed|received"):
        ensure_model(R50, settings)
    assert _cache_names(settings) == []


def test_offline_fails_at_once_and_names_the_ways_forward(tmp_path: Path) -> None:
    settings = _settings(tmp_path, f"http://127.0.0.1:{free_port()}")  # nothing listens
    started = time.monotonic()
    with pytest.raises(ModelUnavailableError) as err:
        ensure_model(R50, settings)
    assert time.monotonic() - started < 5
    message = str(err.value)
    ways = ("--checkpoint FILE", "TSMINDEX_CHECKPOINT_PATH", "--model tsm-motion-mnv2-32px")
    assert "offline" in message and all(way in message for way in ways)
    assert str(settings.resolved_model_cache_dir / R50.filename) in message
    assert _cache_names(settings) == []


def test_a_host_that_never_answers_times_out_on_connect(tmp_path: Path, hanging_port: int) -> None:
    settings = _settings(tmp_path, f"http://127.0.0.1:{hanging_port}", connect_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(ModelUnavailableError, match="cannot connect"):
        ensure_model(R50, settings)
    assert time.monotonic() - started < 4


def test_a_file_copied_into_the_cache_works_offline_and_is_pinned(
    tmp_path: Path, published_r50: Path
) -> None:
    settings = _settings(tmp_path, f"http://127.0.0.1:{free_port()}")
    settings.resolved_model_cache_dir.mkdir(parents=True)
    shutil.copyfile(published_r50, settings.resolved_model_cache_dir / R50.filename)
    path = ensure_model(R50, settings)
    pins = json.loads((settings.resolved_model_cache_dir / "pins.json").read_text())
    assert pins[R50.filename]["sha256"] == _sha256(path)


def test_the_shipped_models_need_no_network_and_are_checked(tmp_path: Path) -> None:
    settings = _settings(tmp_path, f"http://127.0.0.1:{free_port()}")
    shipped = find_model("tsm-motion-mnv2-32px")
    assert ensure_model(shipped.name, settings) == WEIGHTS_DIR / shipped.filename
    assert shipped.sha256 == _sha256(WEIGHTS_DIR / shipped.filename)
    assert _cache_names(settings) == []


def test_a_mirror_keeps_the_publishers_paths() -> None:
    url = "https://hanlab.mit.edu/projects/tsm/models/x.pth"
    assert mirrored(url, None) == url
    assert mirrored(url, "http://127.0.0.1:9000") == "http://127.0.0.1:9000/projects/tsm/models/x.pth"
    assert mirrored(url, "https://m.internal/tsm/") == "https://m.internal/tsm/projects/tsm/models/x.pth"
