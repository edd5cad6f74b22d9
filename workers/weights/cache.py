"""The local model cache: downloaded files under their published names, and the digest pinned for each.

``pins.json`` records, per file name, the SHA-256 a file must have. Where the publisher gives one it
comes from the registry; where none is published (the TSM release lists none), the first download that
loads as the listed network is pinned ("trust on first use") and every later download or use of the
file must match it. An operator who has the digest from elsewhere pins it before the first download
(``tsmindex models pull NAME --sha256 HEX``), or copies a trusted ``pins.json`` in.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

PINS_FILE = "pins.json"


@dataclass(frozen=True)
class Pin:
    """The digest a cached file must have, and where that digest came from."""

    sha256: str
    size_bytes: int | None
    url: str | None
    origin: str  # "first download" | "given" (--sha256) | "published"
    pinned_at: str

    @classmethod
    def now(cls, sha256: str, *, size_bytes: int | None, url: str | None, origin: str) -> Pin:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(sha256=sha256.lower(), size_bytes=size_bytes, url=url, origin=origin, pinned_at=stamp)


class ModelCache:
    """Files in ``root`` (names as published) and their pins."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, filename: str) -> Path:
        return self.root / filename

    def files(self) -> list[Path]:
        """Cached model files (not the pins, not downloads in progress)."""
        if not self.root.is_dir():
            return []
        hidden = (PINS_FILE, ".")  # the pins, and downloads in progress
        return sorted(p for p in self.root.iterdir() if p.is_file() and not p.name.startswith(hidden))

    def pins(self) -> dict[str, Pin]:
        path = self.root / PINS_FILE
        if not path.is_file():
            return {}
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {name: Pin(**entry) for name, entry in raw.items()}

    def pin_of(self, filename: str) -> Pin | None:
        return self.pins().get(filename)

    def pin(self, filename: str, pin: Pin) -> None:
        """Record ``pin`` for ``filename`` (the file is replaced atomically: readers see old or new)."""
        pins = self.pins()
        pins[filename] = pin
        self._write({name: asdict(p) for name, p in sorted(pins.items())})

    def forget(self, filename: str) -> bool:
        """Remove the file and its pin; True if there was either."""
        pins = self.pins()
        had_pin = pins.pop(filename, None) is not None
        if had_pin:
            self._write({name: asdict(p) for name, p in sorted(pins.items())})
        path = self.path_of(filename)
        had_file = path.is_file()
        path.unlink(missing_ok=True)
        return had_pin or had_file

    def _write(self, data: dict[str, object]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{PINS_FILE}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2)
                f.write("\n")
            os.replace(tmp, self.root / PINS_FILE)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
