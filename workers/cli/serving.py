"""`tsmindex model ...` (archive build, TorchServe run config) and `tsmindex bench serve`."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer

from workers.cli.app import app, bench_app

model_app = typer.Typer(help="Build and serve the TSM model archive.", no_args_is_help=True)
app.add_typer(model_app, name="model")

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_STORE = Path("var/model-store")
BASE_TS_CONFIG = ROOT / "infra" / "torchserve" / "config.properties"
METRICS_CONFIG = ROOT / "infra" / "torchserve" / "metrics.yaml"


@model_app.command("build")
def build(
    checkpoint: Annotated[
        str | None,
        typer.Option(help="Checkpoint path or http(s) URL (ours, official or mmaction2 format)."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="A known model by name (`tsmindex models`). With none of --checkpoint, --model and "
            "--random-init: TSMINDEX_DEFAULT_MODEL, the published Kinetics-400 TSM-R50.",
        ),
    ] = None,
    random_init: Annotated[bool, typer.Option(help="Random weights (offline use and tests).")] = False,
    arch: Annotated[str, typer.Option(help="Backbone for --random-init.")] = "resnet50",
    num_classes: Annotated[
        int | None, typer.Option(help="Classes for --random-init (names class_0..).")
    ] = None,
    labels: Annotated[Path | None, typer.Option(help="Class names file for --random-init.")] = None,
    num_segments: Annotated[int, typer.Option(help="Frames per clip for --random-init.")] = 8,
    crop: Annotated[int, typer.Option(help="Input size for --random-init (resize = crop * 8/7).")] = 224,
    seed: Annotated[int, typer.Option(help="Seed for --random-init.")] = 0,
    model_name: Annotated[str, typer.Option(help="TorchServe model name.")] = "tsm",
    version: Annotated[str | None, typer.Option(help="Archive version (default: the model card's).")] = None,
    precision: Annotated[
        str, typer.Option(help="auto | fp32 | fp16 | bf16 | int8 (int8 needs --int8-model).")
    ] = "auto",
    int8_model: Annotated[
        Path | None,
        typer.Option(help="The int8 graph of this checkpoint (`tsmindex model quantize`); serves int8."),
    ] = None,
    compile: Annotated[bool, typer.Option(help="The handler runs torch.compile (GPU hosts).")] = False,
    out: Annotated[Path, typer.Option(help="Directory for <model-name>.mar.")] = DEFAULT_MODEL_STORE,
) -> None:
    """Write the TorchServe archive (.mar) for a checkpoint, a known model, or random weights.

    URLs and known models are downloaded once into the model cache (TSMINDEX_MODEL_CACHE_DIR) and
    verified by SHA-256."""
    from model_store.archive import build_archive
    from model_store.inference import PRECISIONS
    from model_store.tsm import load_model

    if random_init and (checkpoint is not None or model is not None):
        raise typer.BadParameter("give at most one of --checkpoint, --model and --random-init")
    if precision not in PRECISIONS:
        raise typer.BadParameter(f"unknown precision {precision!r}")
    if precision == "int8" and int8_model is None:
        raise typer.BadParameter("--precision int8 needs --int8-model (from `tsmindex model quantize`)")
    if int8_model is not None:
        precision = "int8"
    if random_init:
        network, card = _random_model(arch, num_classes, labels, num_segments, crop, seed)
    else:
        network, card = load_model(resolve_checkpoint(checkpoint, model))
    path = build_archive(
        network,
        card,
        out,
        model_name=model_name,
        version=version,
        precision=precision,  # type: ignore[arg-type]
        int8_model=int8_model,
        compile=compile,
    )
    typer.echo(
        f"{path}  ({card.config.arch}, {card.config.num_classes} classes, version {version or card.version})"
    )


def resolve_checkpoint(checkpoint: str | None, model: str | None) -> Path:
    """A local checkpoint as given, else a URL or known model fetched into the cache (default:
    TSMINDEX_DEFAULT_MODEL)."""
    from services.core.config import get_settings
    from workers.cli.models import fetch_model

    if checkpoint is not None and model is not None:
        raise typer.BadParameter("give at most one of --checkpoint and --model")
    if checkpoint is not None and not checkpoint.startswith(("http://", "https://")):
        return Path(checkpoint)
    return fetch_model(checkpoint or model or get_settings().default_model)


def _random_model(
    arch: str, num_classes: int | None, labels: Path | None, num_segments: int, crop: int, seed: int
) -> tuple[Any, Any]:
    import torch

    from model_store.tsm import ModelCard, Preprocess, TSMConfig, build_from_card, read_labels

    if (num_classes is None) == (labels is None):
        raise typer.BadParameter("--random-init needs exactly one of --num-classes and --labels")
    classes = (
        read_labels(labels) if labels is not None else tuple(f"class_{i}" for i in range(num_classes or 0))
    )
    config = TSMConfig(arch=arch, num_classes=len(classes), num_segments=num_segments)
    card = ModelCard(
        name=f"tsm-{arch}-random",
        version=f"random-seed{seed}",
        config=config,
        preprocess=Preprocess(resize=round(crop * 256 / 224), crop=crop),
        classes=classes,
    )
    torch.manual_seed(seed)
    return build_from_card(card).eval(), card


def render_ts_config(
    archive: Path,
    *,
    batch_size: int,
    base: Path = BASE_TS_CONFIG,
    metrics_config: Path = METRICS_CONFIG,
) -> tuple[str, str]:
    """(config.properties text for serving ``archive``, its model name).

    The base file's keys come first; the per-run lines after them win (a later key wins).
    """
    from model_store.archive import read_manifest
    from services.core.config import get_settings

    s = get_settings()
    manifest_model: Any = read_manifest(archive)["model"]
    name, version = str(manifest_model["modelName"]), str(manifest_model["modelVersion"])
    model_settings = {
        "defaultVersion": True,
        "marName": archive.name,
        "minWorkers": s.torchserve_workers,
        "maxWorkers": s.torchserve_workers,
        "batchSize": batch_size,
        "maxBatchDelay": s.torchserve_max_batch_delay_ms,
        "responseTimeout": int(s.torchserve_timeout_s),
    }
    lines = [
        base.read_text().rstrip("\n"),
        "",
        "# --- this run (infra/scripts/torchserve.sh) ---",
        f"inference_address={s.torchserve_inference_url}",
        f"management_address={s.torchserve_management_url}",
        f"metrics_address={s.torchserve_metrics_url}",
        f"grpc_inference_port={s.torchserve_grpc_inference_port}",
        f"grpc_management_port={s.torchserve_grpc_management_port}",
        f"metrics_config={metrics_config.resolve()}",
        "models=" + json.dumps({name: {version: model_settings}}),
    ]
    return "\n".join(lines) + "\n", name


@model_app.command("serve-config")
def serve_config(
    archive: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="The .mar to serve.")],
    out: Annotated[Path, typer.Option(help="config.properties to write.")],
    batch_size: Annotated[
        int | None,
        typer.Option(help="Default: TSMINDEX_INFERENCE_BATCH_SIZE, else 16 on CUDA / CPU default."),
    ] = None,
) -> None:
    """Write TorchServe's config for one archive; print shell assignments for torchserve.sh."""
    from services.core.config import get_settings

    s = get_settings()
    size = batch_size or s.inference_batch_size or _device_batch_size()
    text, name = render_ts_config(archive.resolve(), batch_size=size)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    typer.echo(f"MODEL_NAME={shlex.quote(name)}")
    typer.echo(f"MANAGEMENT_URL={shlex.quote(s.torchserve_management_url)}")
    typer.echo(f"BATCH_SIZE={size}")


def _device_batch_size() -> int:
    import torch

    from model_store.inference import default_batch_size

    return default_batch_size(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


@bench_app.command("serve")
def bench_serve(
    arch: Annotated[
        str, typer.Option(help="Backbone (random weights: speed does not depend on them).")
    ] = "resnet50",
    num_segments: Annotated[int, typer.Option(help="Frames per clip.")] = 8,
    crop: Annotated[int, typer.Option(help="Clip side in pixels.")] = 224,
    clips: Annotated[int, typer.Option(help="Clips per measurement (at least 2 x the batch size).")] = 8,
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,4,8,16",
    max_batch_delay_ms: Annotated[int, typer.Option(help="TorchServe maxBatchDelay.")] = 50,
    workers: Annotated[int, typer.Option(help="TorchServe workers for the model.")] = 1,
    rounds: Annotated[int, typer.Option(help="Alternating rounds per side; medians are reported.")] = 3,
    out: Annotated[Path, typer.Option(help="JSON results file.")] = Path("bench-results/serve.json"),
    device: Annotated[
        str | None, typer.Option(help="In-process side: cpu or cuda (default: CUDA where present).")
    ] = None,
) -> None:
    """Served vs in-process clips/s for the same clips, per batch size, and the batch fill under load."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from workers.benchmarks.serve import rows_as_dicts, run_serve_benchmark

    sizes = [int(b) for b in batch_sizes.split(",") if b.strip()]
    console = Console()
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task(f"batch sizes {sizes}: building the archive", total=len(sizes))

        def on_row(row: Any) -> None:
            bar.update(task, advance=1, description=f"batch {row.batch_size} done: ratio {row.ratio:.2f}")

        rows, meta = run_serve_benchmark(
            arch=arch,
            num_segments=num_segments,
            crop=crop,
            num_clips=clips,
            batch_sizes=sizes,
            max_batch_delay_ms=max_batch_delay_ms,
            workers=workers,
            rounds=rounds,
            on_row=on_row,
            device=device,
        )
    table = Table(
        title=f"{arch}, {num_segments}x{crop}px clips, max({clips}, 2 x batch) clips x {rounds} rounds, "
        f"{meta['precision']} on {meta['device']}, "
        f"{meta['cpu_count']} CPUs"
    )
    for column in (
        "batch",
        "in-process clips/s",
        "served clips/s",
        "served/in-process",
        "clips/batch",
        "fill",
    ):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            str(r.batch_size),
            f"{r.in_process_clips_per_s:.2f}",
            f"{r.served_clips_per_s:.2f}",
            f"{r.ratio:.2f}",
            f"{r.mean_batch:.1f}",
            f"{r.batch_fill:.0%}",
        )
    console.print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows_as_dicts(rows)}, indent=2))
    console.print(f"saved {out}")
