"""``tsmindex models``: the known and cached models with their cards; and how every command that takes
a model turns ``--checkpoint``/``--model``/the settings into a verified local file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.table import Table

from workers.cli.app import app

if TYPE_CHECKING:
    from services.core.config import Settings
    from workers.weights import KnownModel, ModelCache

models_app = typer.Typer(
    help="Known models (published and shipped) and the local model cache.", invoke_without_command=True
)
app.add_typer(models_app, name="models")


def _out() -> Console:
    return Console()  # made per call: the width follows the terminal (and COLUMNS) of the moment


def _err() -> Console:
    return Console(stderr=True)


ModelOpt = Annotated[
    str | None, typer.Option("--model", help="a known model by name (`tsmindex models`); default the setting")
]


def _settings() -> Settings:
    from services.core.config import get_settings

    return get_settings()


def fetch_model(spec: str) -> Path:
    """The verified file of a known model (by name) or of a URL, downloaded once with a progress bar;
    exits with the error's message (offline: the two ways forward) when it cannot be had."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from workers.weights import WeightsError, ensure_model

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=_err(),
        transient=False,
    ) as progress:
        task = progress.add_task(f"downloading {spec}", total=None, visible=False)

        def on_progress(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total, visible=True)

        try:
            return ensure_model(spec, _settings(), on_progress=on_progress)
        except WeightsError as exc:
            progress.stop()
            _err().print(f"[red]{type(exc).__name__}[/red]: {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from exc


def resolve_model_path(checkpoint: Path | None, model: str | None) -> Path:
    """The model a command runs: ``--checkpoint``, else ``--model``, else TSMINDEX_CHECKPOINT_PATH,
    else the default known model (TSMINDEX_DEFAULT_MODEL, downloaded once)."""
    if checkpoint is not None and model is not None:
        raise typer.BadParameter("give --checkpoint or --model, not both")
    if checkpoint is not None:
        return checkpoint
    settings = _settings()
    if model is None and settings.checkpoint_path is not None:
        return settings.checkpoint_path
    return fetch_model(model or settings.default_model)


@models_app.callback()
def models_cmd(ctx: typer.Context) -> None:
    """Known and cached models with their cards (classes, frames, input size, source, sha256, size)."""
    if ctx.invoked_subcommand is None:
        list_cmd()


@models_app.command("list")
def list_cmd() -> None:
    """The known models and every file in the model cache."""
    from workers.weights import KNOWN_MODELS, cache_for

    settings = _settings()
    cache = cache_for(settings)
    table = Table(title=f"Models (cache: {cache.root})")
    columns = ("name", "model", "classes", "frames", "input", "shift", "sha256", "size", "cached", "source")
    for column in columns:
        table.add_column(
            column, justify="right" if column in ("frames", "size") else "left", no_wrap=column == "name"
        )
    for known in KNOWN_MODELS:
        table.add_row(*_row(known, cache, default=known.name == settings.default_model))
    registered = {m.filename for m in KNOWN_MODELS}
    pins = cache.pins()
    for path in cache.files():
        if path.name not in registered:
            pin = pins.get(path.name)
            sha = f"{pin.sha256[:12]}… ({pin.origin})" if pin else "-"
            source = (pin.url or "") if pin else ""
            table.add_row("-", path.name, "", "", "", "", sha, _size(path.stat().st_size), "yes", source)
    _out().print(table)
    _out().print(
        f"default: {settings.default_model} (TSMINDEX_DEFAULT_MODEL); details: tsmindex models show NAME",
        highlight=False,
    )


def _row(known: KnownModel, cache: ModelCache, *, default: bool) -> list[str]:
    from workers.weights import expected_digest

    expected, origin = expected_digest(known, cache)
    path = known.shipped_path or cache.path_of(known.filename)
    cached = path.is_file()
    card = known.card(version=expected[:12] if expected else "")
    c = card.config
    classes = f"{len(card.classes)}: {', '.join(card.classes[:3])}{', …' if len(card.classes) > 3 else ''}"
    sha = f"{expected[:12]}… ({origin.split(' (')[0]})" if expected else "pinned on first download"
    return [
        known.name + (" (default)" if default else ""),
        known.title,
        classes,
        str(c.num_segments),
        f"{card.preprocess.resize}→{card.preprocess.crop}px",
        "none" if not c.shift_div else ("uni" if c.causal else "bi"),
        sha,
        _size(path.stat().st_size) if cached else "?",
        "shipped" if known.shipped_path else ("yes" if cached else "no"),
        urlsplit(known.url).netloc if known.url else "shipped",
    ]


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


@models_app.command("show")
def show_cmd(name: Annotated[str, typer.Argument(help="a known model's name")]) -> None:
    """One model's full card: network, preprocessing, classes, source, digest, cache state."""
    from workers.weights import UnknownModelError, cache_for, expected_digest, find_model

    try:
        known = find_model(name)
    except UnknownModelError as exc:
        _err().print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    cache = cache_for(_settings())
    expected, origin = expected_digest(known, cache)
    card = known.card(version=expected[:12] if expected else "")
    path = known.shipped_path or cache.path_of(known.filename)
    table = Table(title=known.title, show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    rows = {
        "name": known.name,
        "labels stored as": f"{card.name}:{card.version or '<first 12 hex digits of its sha256>'}",
        "network": ", ".join(f"{k}={v}" for k, v in card.config.to_dict().items()),
        "preprocessing": f"shorter side {card.preprocess.resize}, centre crop {card.preprocess.crop}, "
        f"mean {card.preprocess.mean}, std {card.preprocess.std}",
        "classes": f"{len(card.classes)}: {', '.join(card.classes)}",
        "source": known.source,
        "sha256": f"{expected} ({origin})" if expected else origin,
        "accuracy": known.accuracy or "-",
        "notes": known.notes or "-",
        "file": f"{path} ({_size(path.stat().st_size)})" if path.is_file() else f"{path} (not downloaded)",
    }
    for key, value in rows.items():
        table.add_row(key, value)
    _out().print(table)


@models_app.command("pull")
def pull_cmd(
    name: Annotated[
        str | None, typer.Argument(help="a known model (default: TSMINDEX_DEFAULT_MODEL)")
    ] = None,
    sha256: Annotated[
        str | None, typer.Option(help="pin this digest before downloading (from a source you trust)")
    ] = None,
) -> None:
    """Download a known model into the cache and verify it (nothing to do when it is there)."""
    from workers.weights import Pin, cache_for, find_model

    settings = _settings()
    name = name or settings.default_model
    if sha256 is not None:
        known = find_model(name)
        if known.url is None or known.sha256 is not None:
            raise typer.BadParameter(f"{name} has a recorded digest already")
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256.lower()):
            raise typer.BadParameter("--sha256 takes 64 hex digits")
        pin = Pin.now(sha256, size_bytes=None, url=known.url, origin="given")
        cache_for(settings).pin(known.filename, pin)
    path = fetch_model(name)
    _out().print(f"{name}: {path} ({_size(path.stat().st_size)})", highlight=False)


@models_app.command("remove")
def remove_cmd(
    name: Annotated[str, typer.Argument(help="a known model, or a file name in the cache")],
) -> None:
    """Delete a downloaded model and its pinned digest (the next use downloads and pins it again)."""
    from workers.weights import KNOWN_MODELS, cache_for

    filename = next((m.filename for m in KNOWN_MODELS if m.name == name and m.url), name)
    if Path(filename).name != filename:
        raise typer.BadParameter("a model name or a file name in the cache, not a path")
    if not cache_for(_settings()).forget(filename):
        _err().print(f"[yellow]nothing cached for {name}[/yellow]")
        raise typer.Exit(1)
    _out().print(f"removed {filename} and its pin", highlight=False)
