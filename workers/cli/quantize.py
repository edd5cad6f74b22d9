"""`tsmindex model quantize`: an int8 graph of a model, calibrated on the user's videos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workers.cli.serving import model_app, resolve_checkpoint


@model_app.command("quantize")
def quantize(
    calibration: Annotated[
        list[Path], typer.Option(help="Videos or folders of videos like the ones to index (repeatable).")
    ],
    out: Annotated[Path, typer.Option(help="Where to write the int8 ONNX graph.")],
    checkpoint: Annotated[str | None, typer.Option(help="Checkpoint path or http(s) URL.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="A known model by name.")] = None,
    clips: Annotated[int, typer.Option(min=1, help="Calibration clips, spread over the videos.")] = 32,
    window_s: Annotated[float, typer.Option(help="Seconds per clip window, as when indexing.")] = 10.0,
) -> None:
    """Post-training int8 quantization for x86 CPUs (ONNX Runtime, per-channel weights).

    Serve the result with `tsmindex model build --int8-model OUT` (same checkpoint), or in-process
    with TSMINDEX_INFERENCE_PRECISION=int8 and TSMINDEX_INT8_MODEL_PATH=OUT."""
    from model_store.quantize import QuantizationError, quantize_int8
    from model_store.tsm import load_model
    from workers.quantization import calibration_clips

    network, card = load_model(resolve_checkpoint(checkpoint, model))
    found = calibration_clips(calibration, card, max_clips=clips, window_s=window_s)
    for path, why in found.unusable.items():
        typer.echo(f"skipped {path}: {why}", err=True)
    try:
        path = quantize_int8(network, card, found.clips, out)
    except QuantizationError as exc:
        raise typer.BadParameter(str(exc), param_hint="--calibration") from exc
    typer.echo(
        f"{path}  ({card.name} {card.version}, {len(found.clips)} clips from {len(found.videos)} videos)"
    )
