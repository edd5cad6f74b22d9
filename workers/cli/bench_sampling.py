"""`tsmindex bench sampling`: label agreement of keyframe sampling with exact sampling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from workers.cli.app import bench_app
from workers.cli.corpus import CorpusDirOpt, corpus_dir

if TYPE_CHECKING:
    import numpy as np


@bench_app.command("sampling")
def bench_sampling(
    workdir: Annotated[Path, typer.Option(help="Where generated footage is cached between runs.")] = Path(
        "var/bench/sampling"
    ),
    out: Annotated[Path, typer.Option(help="JSON file for the figures.")] = Path(
        "bench-results/sampling.json"
    ),
    footage: Annotated[
        list[str] | None, typer.Option(help="Only this generated footage (repeatable), e.g. 720p-gop30.")
    ] = None,
    corpus: Annotated[bool, typer.Option(help="Also the real corpus (`tsmindex corpus fetch`).")] = True,
    directory: CorpusDirOpt = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Model (default: the shipped motion model).", exists=True, dir_okay=False),
    ] = None,
) -> None:
    """Label both samplings' clips with one model and count the windows whose labels agree."""
    from rich.console import Console
    from rich.table import Table

    from workers.benchmarks.sampling import FOOTAGE, AgreementRow, agreement, generated_files, to_json
    from workers.inference import InProcessEngine
    from workers.media.corpus import fetch
    from workers.training.shipped import SHIPPED_MODEL

    unknown = set(footage or ()) - {f.name for f in FOOTAGE}
    if unknown:
        names = [f.name for f in FOOTAGE]
        raise typer.BadParameter(f"unknown footage {sorted(unknown)}; choose from {names}")
    console = Console()
    model_path = checkpoint or SHIPPED_MODEL
    engine = InProcessEngine.from_checkpoint(model_path, device="cpu")
    pre, classes = engine.model.card.preprocess, engine.model.card.classes

    def classify(clips: list[np.ndarray]) -> list[list[tuple[str, float]]]:
        return [[(x.label, x.score) for x in p.labels] for p in engine.classify(clips, top_k=len(classes))]

    rows: list[AgreementRow] = []

    def save(rows: list[AgreementRow]) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(to_json(rows, model=str(model_path)), indent=2) + "\n")

    with console.status("sampling bench") as status:
        if corpus:
            status.update("labelling the corpus")
            real = [(item.path, None) for item in fetch(corpus_dir(directory), on_step=status.update)]
            rows.append(agreement("real corpus", real, classify, resize=pre.resize, crop=pre.crop))
            save(rows)
        for spec in FOOTAGE:
            if footage and spec.name not in footage:
                continue
            files = generated_files(spec, workdir, on_step=status.update)
            status.update(f"labelling {spec.name}")
            rows.append(agreement(spec.name, files, classify, resize=pre.resize, crop=pre.crop))
            save(rows)  # after each row: a long run keeps what it measured
    table = Table(title=f"keyframe vs exact sampling, labels of {engine.model.card.name} (10 s windows)")
    columns = ["footage", "files", "windows", "keyframe share", "top-1 same", "top-5 same", "ranking same"]
    for column in [*columns, "accuracy exact / keyframe", "mean |d score|"]:
        table.add_column(column, justify="left" if column == "footage" else "right")
    for row in rows:
        accuracy = (
            "-" if row.exact_accuracy is None else f"{row.exact_accuracy:.1%} / {row.keyframe_accuracy:.1%}"
        )
        table.add_row(
            row.footage,
            str(row.files),
            str(row.windows),
            f"{row.keyframe_picks:.0%}",
            f"{row.top1_agreement:.1%}",
            f"{row.top5_agreement:.1%}",
            f"{row.ranking_agreement:.1%}",
            accuracy,
            f"{row.mean_abs_score_change:.3f}",
        )
    console.print(table)
    save(rows)
    console.print(f"saved {out}")
