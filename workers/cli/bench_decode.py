"""`tsmindex bench decode`: exact and keyframe sampling vs naive full decode, on generated clips and
on the real corpus."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from workers.cli.app import bench_app
from workers.cli.corpus import CorpusDirOpt, corpus_dir

if TYPE_CHECKING:
    from rich.table import Table

    from workers.benchmarks.decode import DecodeBenchRow


@bench_app.command("decode")
def bench_decode(
    workdir: Annotated[Path, typer.Option(help="Where generated videos are cached between runs.")] = Path(
        "var/bench/decode"
    ),
    out: Annotated[Path, typer.Option(help="JSON file for the figures.")] = Path("bench-results/decode.json"),
    repeats: Annotated[int, typer.Option(min=1, help="Runs per side and video; the median is reported.")] = 3,
    video: Annotated[
        list[str] | None, typer.Option(help="Only these videos (repeatable), e.g. 1080p-60s or vtest.avi.")
    ] = None,
    corpus: Annotated[bool, typer.Option(help="Also the real corpus (`tsmindex corpus fetch`).")] = True,
    directory: CorpusDirOpt = None,
    device: Annotated[
        str, typer.Option(help="cpu, or cuda[:N]: also exact sampling with NVDEC decode and GPU resize.")
    ] = "cpu",
) -> None:
    """Median time per video for exact sampling, keyframe sampling and a naive full decode."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from workers.benchmarks.decode import BENCH_VIDEOS, run, write_json
    from workers.media.corpus import fetch, load_manifest

    corpus_names = [entry["name"] for entry in load_manifest()["files"]] if corpus else []
    known = [v.name for v in BENCH_VIDEOS] + corpus_names
    unknown = set(video or ()) - set(known)
    if unknown:
        raise typer.BadParameter(f"unknown video(s) {sorted(unknown)}; choose from {known}")
    chosen = [v for v in BENCH_VIDEOS if not video or v.name in video]
    if device != "cpu":
        from workers.media.gpu import cuda_decode_available

        if not device.startswith("cuda") or not cuda_decode_available():
            raise typer.BadParameter(
                f"no CUDA decode here for --device {device} (PyAV CUDA device and a GPU)"
            )
    console = Console()
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("decode bench", total=None)

        def step(message: str) -> None:
            bar.update(task, description=message)

        real = [
            (item.name, item.path)
            for item in (fetch(corpus_dir(directory), on_step=step) if corpus else [])
            if not video or item.name in video
        ]
        rows = run(workdir=workdir, videos=chosen, corpus=real, repeats=repeats, device=device, on_step=step)
    console.print(_table(rows, repeats))
    write_json(rows, out, repeats=repeats)
    console.print(f"saved {out}")
    if not all(row.exact_frames_equal and row.keyframe_frames_equal for row in rows):
        raise typer.Exit(code=1)


def _table(rows: list[DecodeBenchRow], repeats: int) -> Table:
    from rich.table import Table

    table = Table(title=f"decode: exact and keyframe sampling vs a naive full decode (median of {repeats})")
    columns = ["video", "codec", "size", "frames", "clips", "exact ms", "keyframe ms", "naive ms"]
    columns += ["naive/exact", "naive/keyframe", "exact/keyframe", "decoded e/k/n", "picks", "equal"]
    on_device = any(row.device_exact_ms is not None for row in rows)
    if on_device:
        columns += [f"{rows[0].device} exact ms", "cpu/device", "mean |diff|"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("video", "codec", "size") else "right")
    for row in rows:
        table.add_row(
            row.video,
            row.codec,
            row.size,
            str(row.frames),
            str(row.clips),
            f"{row.exact_ms:.0f}",
            f"{row.keyframe_ms:.0f}",
            f"{row.naive_ms:.0f}",
            f"{row.exact_speedup:.2f}x",
            f"{row.keyframe_speedup:.2f}x",
            f"{row.keyframe_vs_exact:.2f}x",
            f"{row.exact_frames_decoded}/{row.keyframe_frames_decoded}/{row.naive_frames_decoded}",
            f"{row.keyframe_picks}/{row.targets}",
            "yes" if row.exact_frames_equal and row.keyframe_frames_equal else "NO",
            *(_device_cells(row) if on_device else ()),
        )
    return table


def _device_cells(row: DecodeBenchRow) -> tuple[str, ...]:
    if row.device_exact_ms is None:
        return ("-", "-", "-")
    return (
        f"{row.device_exact_ms:.0f}",
        f"{row.exact_ms / row.device_exact_ms:.2f}x",
        f"{row.device_mean_abs_diff:.2f}",
    )
