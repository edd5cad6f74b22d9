"""``tsmindex watch``: the online TSM on a file played at real time or a live stream URL."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from workers.cli.app import app
from workers.cli.models import ModelOpt, resolve_model_path

if TYPE_CHECKING:
    from workers.watch.moments import Moment
    from workers.watch.online import FrameLabel
    from workers.watch.runner import WatchStats
    from workers.watch.sink import StreamRow
    from workers.watch.source import SourceFrame


@app.command("watch")
def watch_cmd(
    source: Annotated[
        str, typer.Argument(help="a video file, or a stream URL (rtsp://, http(s)://, HLS .m3u8)")
    ],
    checkpoint: Annotated[
        Path | None, typer.Option(help="model checkpoint", exists=True, dir_okay=False)
    ] = None,
    model: ModelOpt = None,
    index: Annotated[bool, typer.Option("--index", help="write moments to the index as they close")] = False,
    stream_id: Annotated[
        str | None, typer.Option(help="the stream's name in the index (default: source name + start time)")
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option(
            help="pace a recording at this multiple of real time; 0: as fast as it decodes "
            "(default 1 for files, 0 for URLs, which pace themselves)"
        ),
    ] = None,
    every: Annotated[int, typer.Option(help="run the model on every n-th frame")] = 1,
    window: Annotated[
        int | None, typer.Option(help="frames averaged into the label (default: the model's)")
    ] = None,
    min_frames: Annotated[int, typer.Option(help="frames a new label must lead before a moment opens")] = 3,
    min_score: Annotated[float, typer.Option(help="below this a frame leads to no label")] = 0.0,
    max_frames: Annotated[int | None, typer.Option(help="stop after this many frames")] = None,
    plain: Annotated[
        bool | None, typer.Option("--plain/--live", help="a line per frame (default when not a terminal)")
    ] = None,
    bf16: Annotated[
        bool, typer.Option(help="bf16 autocast (helps ResNets on CPUs with native bf16)")
    ] = False,
) -> None:
    """Run the online (uni-directional) TSM frame by frame: the running top label and each frame's
    latency, live; with --index, moments land in the index under a stream id as they close."""
    from model_store.tsm import load_model
    from workers.watch.moments import MomentTracker
    from workers.watch.online import OnlineClassifier
    from workers.watch.runner import run_watch
    from workers.watch.source import SourceError, is_url, read_frames

    if every < 1 or min_frames < 1:
        raise typer.BadParameter("--every and --min-frames take positive numbers")
    console, err = Console(), Console(stderr=True)
    network, card = load_model(resolve_model_path(checkpoint, model))
    if not card.config.causal:
        err.print(
            f"[yellow]{card.name} was trained with the bi-directional shift: online it never sees the "
            "future frames it learned from, and its labels suffer (the shipped motion model: 16% of "
            "frames right online, 99% offline). Prefer a causal model (`tsmindex models`, shift "
            "'uni'; or `tsmindex train --causal --context N`).[/yellow]"
        )
    classifier = OnlineClassifier(network, card, window=window, bf16=bf16)
    pace = speed if speed is not None else (0.0 if is_url(source) else 1.0)
    frames = read_frames(
        source,
        resize=card.preprocess.resize,
        crop=card.preprocess.crop,
        speed=pace,
        every=every,
        max_frames=max_frames,
    )
    sink = _IndexSink(source, stream_id, card.name, card.version) if index else None
    plain = plain if plain is not None else not sys.stdout.isatty()
    view = _PlainView(console) if plain else _LiveView(console, source, card.name)
    tracker = MomentTracker(min_frames=min_frames, min_score=min_score)

    def on_moment(moment: Moment) -> None:
        if sink is not None:
            sink.write(moment)
        view.moment(moment, sink)

    try:
        with view:
            stats = run_watch(frames, classifier, tracker, on_frame=view.frame, on_moment=on_moment)
    except SourceError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    finally:
        if sink is not None:
            sink.close()
    console.print(_summary(stats, card.name, sink))


class _PlainView:
    """A line per frame, and one per moment: for logs, pipes and tests."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __enter__(self) -> _PlainView:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def frame(self, frame: SourceFrame, result: FrameLabel, stats: WatchStats) -> None:
        self.console.print(
            f"frame {frame.index:6d}  t {frame.t_s:8.3f} s  {result.label:<24} {result.score:.3f}  "
            f"latency {result.latency_s * 1000:6.1f} ms",
            highlight=False,
            soft_wrap=True,
        )

    def moment(self, moment: Moment, sink: _IndexSink | None) -> None:
        where = f" -> index ({sink.stream_id})" if sink is not None else ""
        self.console.print(
            f"moment {moment.label} {moment.start_s:.3f}-{moment.end_s:.3f} s, {moment.frames} frames, "
            f"best {moment.best_score:.3f}{where}",
            highlight=False,
            soft_wrap=True,
        )


class _LiveView:
    """A live panel: the running label, its score, the latency of the frame and of the run so far."""

    def __init__(self, console: Console, source: str, model: str) -> None:
        from rich.live import Live

        self.source, self.model = source, model
        self.live = Live(console=console, refresh_per_second=10, transient=False)
        self.last_moment = "-"

    def __enter__(self) -> _LiveView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)

    def frame(self, frame: SourceFrame, result: FrameLabel, stats: WatchStats) -> None:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim")
        grid.add_column()
        grid.add_row("source", self.source)
        grid.add_row("model", self.model)
        grid.add_row("frame", f"{frame.index} at {frame.t_s:.2f} s")
        bar = "█" * round(result.score * 20)
        grid.add_row("label", Text(f"{result.label}  {result.score:.2f} {bar}", style="bold green"))
        grid.add_row(
            "latency",
            f"{result.latency_s * 1000:.1f} ms this frame, p50 {stats.latency_ms(0.5):.1f} / "
            f"p95 {stats.latency_ms(0.95):.1f} ms",
        )
        grid.add_row("last moment", self.last_moment)
        self.live.update(Group(grid))

    def moment(self, moment: Moment, sink: _IndexSink | None) -> None:
        self.last_moment = (
            f"{moment.label} {moment.start_s:.1f}-{moment.end_s:.1f} s ({moment.frames} frames)"
            + (" -> index" if sink is not None else "")
        )


class _IndexSink:
    """Each closed moment in its own transaction, so a search sees it at once."""

    def __init__(self, source: str, stream_id: str | None, model_name: str, model_version: str) -> None:
        from services.core.config import get_settings
        from services.core.db import create_db_engine, session_factory, upgrade_database
        from workers.watch.sink import open_stream

        self.stream_id = stream_id or _default_stream_id(source)
        self.model_name, self.model_version = model_name, model_version
        self.engine = create_db_engine(get_settings().resolved_database_url)
        if self.engine.dialect.name == "sqlite":
            upgrade_database(self.engine)
        self.sessions = session_factory(self.engine)
        with self.sessions.begin() as session:
            self.stream: StreamRow = open_stream(session, stream_id=self.stream_id)
        self.written = 0

    def write(self, moment: Moment) -> None:
        from workers.watch.sink import write_moment

        with self.sessions.begin() as session:
            write_moment(
                session,
                self.stream,
                model_name=self.model_name,
                model_version=self.model_version,
                label=moment.label,
                label_index=moment.label_index,
                start_s=moment.start_s,
                end_s=moment.end_s,
                frames=moment.frames,
                best_score=moment.best_score,
                mean_score=moment.mean_score,
            )
        self.written += 1

    def close(self) -> None:
        self.engine.dispose()


def _default_stream_id(source: str) -> str:
    name = source.rstrip("/").rsplit("/", 1)[-1] or source
    return f"{name}@{datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"


def _summary(stats: WatchStats, model: str, sink: _IndexSink | None) -> Table:
    table = Table(title=f"watch: {model}")
    table.add_column("frames", justify="right")
    table.add_column("stream time", justify="right")
    for q in ("mean", "p50", "p95", "max"):
        table.add_column(f"latency {q}", justify="right")
    table.add_column("moments")
    moments = f"{stats.moments}" + (f", in the index as {sink.stream_id}" if sink is not None else "")
    table.add_row(
        str(stats.frames),
        f"{stats.last_t_s:.2f} s",
        f"{stats.mean_latency_ms:.1f} ms",
        f"{stats.latency_ms(0.5):.1f} ms",
        f"{stats.latency_ms(0.95):.1f} ms",
        f"{stats.latency_ms(1.0):.1f} ms",
        moments,
    )
    return table
