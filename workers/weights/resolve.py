"""From a model name to a verified local file: shipped, cached, or downloaded once into the cache."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from services.core.config import Settings
from services.core.storage import sha256_file
from workers.weights.cache import ModelCache, Pin
from workers.weights.download import ProgressCallback, download
from workers.weights.errors import ChecksumMismatchError, InvalidWeightsError, SourceUnreachableError
from workers.weights.registry import KNOWN_MODELS, KnownModel, find_model, mirrored

SHIPPED_DEMO_MODEL = "tsm-motion-mnv2-32px"


class ModelUnavailableError(SourceUnreachableError):
    """The model is not cached and its publisher cannot be reached: says what to do instead."""


def cache_for(settings: Settings) -> ModelCache:
    return ModelCache(settings.resolved_model_cache_dir)


def expected_digest(model: KnownModel, cache: ModelCache) -> tuple[str | None, str]:
    """(the digest the file must have, where it comes from) or (None, why there is none yet)."""
    if model.sha256 is not None:
        return model.sha256, "published" if model.url else "recorded"
    pin = cache.pin_of(model.filename)
    if pin is not None:
        return pin.sha256, f"pinned ({pin.origin}, {pin.pinned_at})"
    return None, "not published; pinned on first download"


def model_for(spec: str) -> KnownModel:
    """A known model by name, or by URL (a URL nobody lists becomes an entry of its own, cached under
    its file name and pinned on first download like the published ones)."""
    if not spec.startswith(("http://", "https://")):
        return find_model(spec)
    listed = next((m for m in KNOWN_MODELS if m.url == spec), None)
    if listed is not None:
        return listed
    filename = spec.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return KnownModel(name=filename, title=spec, filename=filename, url=spec)


def ensure_model(
    model: KnownModel | str,
    settings: Settings,
    *,
    on_progress: ProgressCallback | None = None,
) -> Path:
    """The verified local file of ``model`` (a name, a URL or an entry), downloading it once if needed."""
    model = model_for(model) if isinstance(model, str) else model
    shipped = model.shipped_path
    if shipped is not None:
        _check(shipped, model.sha256, "recorded")
        return shipped
    assert model.url is not None
    cache = cache_for(settings)
    expected, origin = expected_digest(model, cache)
    path = cache.path_of(model.filename)
    if path.is_file():
        if expected is None:  # placed by hand (offline sites copy it in): trusted once it loads
            _validate(model)(path)
            _pin_first(cache, model, path, sha256_file(path), path.stat().st_size)
        else:
            hint = f"remove it (`tsmindex models remove {model.name}`) to fetch it again"
            _check(path, expected, origin, hint=hint)
        return path
    url = mirrored(model.url, settings.model_mirror_url)
    try:
        got = download(
            url,
            cache.root,
            model.filename,
            expected_sha256=expected,
            validate=_validate(model),
            connect_timeout_s=settings.model_connect_timeout_s,
            read_timeout_s=settings.io_timeout_s,
            on_progress=on_progress,
        )
    except SourceUnreachableError as exc:
        raise ModelUnavailableError(offline_message(model, cache.path_of(model.filename), str(exc))) from exc
    if expected is None:
        _pin_first(cache, model, got.path, got.sha256, got.size_bytes)
    return got.path


def _pin_first(cache: ModelCache, model: KnownModel, path: Path, sha256: str, size: int) -> None:
    cache.pin(model.filename, Pin.now(sha256, size_bytes=size, url=model.url, origin="first download"))


def _check(path: Path, expected: str | None, origin: str, *, hint: str = "") -> None:
    if expected is None:
        return
    digest = sha256_file(path)
    if digest != expected:
        raise ChecksumMismatchError(
            f"{path}: sha256 {digest} differs from the {origin} {expected}" + (f"; {hint}" if hint else "")
        )


def _validate(model: KnownModel) -> Callable[[Path], None]:
    """Refuse a file that does not load, strictly, as the network ``model`` is listed as."""

    def validate(path: Path) -> None:
        from model_store.tsm import load_model

        _, card = load_model(path)
        if model not in KNOWN_MODELS:
            return  # an unlisted URL: loading strictly is all there is to check
        want = model.card()
        if card.config != want.config or card.classes != want.classes:
            raise InvalidWeightsError(
                f"{path.name} loads as {card.config} with {len(card.classes)} classes, "
                f"not as {model.name} ({want.config}, {len(want.classes)} classes)"
            )

    return validate


def offline_message(model: KnownModel, cache_path: Path, reason: str) -> str:
    return (
        f"cannot download the model {model.name} ({model.title}): {reason}. "
        "This machine seems to be offline. Two ways forward:\n"
        "  - a local checkpoint: --checkpoint FILE (or TSMINDEX_CHECKPOINT_PATH=FILE); the published "
        f"file itself also works copied to {cache_path}, or served by a mirror "
        "(TSMINDEX_MODEL_MIRROR_URL)\n"
        f"  - the shipped motion model, for a demo: --model {SHIPPED_DEMO_MODEL}, or "
        "`bash infra/scripts/demo.sh`"
    )
