"""``tsmindex export onnx|torchscript``: the network as a file other runtimes load, checked against
PyTorch on random clips at batch sizes other than the one it was exported with."""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from workers.cli.app import app

if TYPE_CHECKING:
    import numpy as np

    from model_store.tsm import TSM, ModelCard

# (clips [N, T, 3, H, W] float32) -> (logits [N, K], embedding [N, D])
Runner = Callable[["np.ndarray"], tuple["np.ndarray", "np.ndarray"]]
PARITY_BATCHES = (1, 3)  # exported at batch 2: others catch shapes frozen at export time


class Format(StrEnum):
    onnx = "onnx"
    torchscript = "torchscript"


SUFFIX = {Format.onnx: ".onnx", Format.torchscript: ".torchscript.pt"}


@app.command("export")
def export_cmd(
    fmt: Annotated[Format, typer.Argument(metavar="onnx|torchscript", help="the file format")],
    checkpoint: Annotated[str, typer.Argument(help="a checkpoint file, or a known model's name")],
    out: Annotated[
        Path | None, typer.Option(help="output file (default var/export/<name>-<version><suffix>)")
    ] = None,
    atol: Annotated[float, typer.Option(help="largest logit difference accepted")] = 1e-3,
) -> None:
    """Export the network (clips [batch, T, 3, H, W] -> logits, embedding) with its card beside it,
    then run both on random clips and report the largest logit difference (exit 1 above --atol)."""
    import torch

    from model_store.tsm import export_onnx, export_torchscript, load_model
    from workers.cli.models import fetch_model

    path = Path(checkpoint) if Path(checkpoint).is_file() else fetch_model(checkpoint)
    model, card = load_model(path)
    model = model.float().eval()
    size = card.preprocess.crop
    target = out or Path("var/export") / f"{card.name}-{card.version}{SUFFIX[fmt]}"
    if fmt is Format.onnx:
        export_onnx(model, target, height=size, width=size)
        runner = _onnx_runner(target)
    else:
        export_torchscript(model, target, height=size, width=size)
        runner = _torchscript_runner(target)
    card_path = target.with_name(target.name + ".card.json")
    card_path.write_text(json.dumps(card.to_dict(), indent=2) + "\n")
    with torch.inference_mode():
        rows = parity(model, card, runner)
    table = Table(title=f"{fmt.value} export of {card.name}:{card.version} vs PyTorch (random clips)")
    for column in ("batch", "max |logit diff|", "max |embedding diff|", "same top-1"):
        table.add_column(column, justify="right")
    for batch, logit_diff, emb_diff, same in rows:
        table.add_row(str(batch), f"{logit_diff:.2e}", f"{emb_diff:.2e}", f"{same}/{batch}")
    console = Console()
    console.print(table)
    worst = max(row[1] for row in rows)
    # ONNX keeps large weights in a side file (<name>.data); list whatever the export wrote.
    written = [target, *(p for p in target.parent.glob(target.name + ".*") if p != card_path)]
    files = ", ".join(f"{p} ({p.stat().st_size / 2**20:.1f} MiB)" for p in written)
    console.print(f"{files}; card {card_path}", highlight=False)
    if worst > atol:
        Console(stderr=True).print(f"[red]max logit difference {worst:.2e} exceeds --atol {atol:g}[/red]")
        raise typer.Exit(1)
    console.print(f"max |logit diff| {worst:.2e} <= {atol:g}: parity holds", highlight=False)


def parity(model: TSM, card: ModelCard, runner: Runner) -> list[tuple[int, float, float, int]]:
    """(batch, max |logit diff|, max |embedding diff|, clips with the same top-1) per batch size."""
    import torch

    t, size = card.config.num_segments, card.preprocess.crop
    rows = []
    for batch in PARITY_BATCHES:
        x = torch.randn(batch, t, 3, size, size, generator=torch.Generator().manual_seed(batch))
        want_logits, want_emb = model.forward_features(x)
        logits, emb = runner(x.numpy())
        got_logits, got_emb = torch.from_numpy(logits), torch.from_numpy(emb)
        rows.append(
            (
                batch,
                float((got_logits - want_logits).abs().max()),
                float((got_emb - want_emb).abs().max()),
                int((got_logits.argmax(1) == want_logits.argmax(1)).sum()),
            )
        )
    return rows


def _onnx_runner(path: Path) -> Runner:
    try:
        import onnxruntime as ort
    except ImportError as exc:  # the `onnx` extra
        raise typer.BadParameter("ONNX export needs the onnx extra: pip install 'tsmindex[onnx]'") from exc
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, emb = session.run(["logits", "embedding"], {"clips": clips})
        return logits, emb

    return run


def _torchscript_runner(path: Path) -> Runner:
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        loaded = torch.jit.load(str(path))  # type: ignore[no-untyped-call]

    def run(clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, emb = loaded(torch.from_numpy(clips))
        return logits.numpy(), emb.numpy()

    return run
