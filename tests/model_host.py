"""A model publisher's host for tests: a real HTTP server on a free loopback port that serves files
under the publisher's paths (as ``TSMINDEX_MODEL_MIRROR_URL`` expects), counts every GET, and can
cut a transfer short. Also a port where connecting hangs, and the published TSM-R50 as a file with
random weights under its published name.

Import the fixtures into a conftest.py or a test module."""

from __future__ import annotations

import shutil
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

__all__ = ["ReleaseHost", "hanging_port", "published_r50", "release_host"]


class ReleaseHost:
    """Serves ``root``; ``publish(url, file)`` puts a file where ``url``'s path says."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.gets: Counter[str] = Counter()
        self.truncate: set[str] = set()  # paths whose body stops half-way (the length says more)
        host = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self) -> None:
                host.gets[self.path] += 1
                if self.path in host.truncate:
                    self._send_half()
                    return
                super().do_GET()

            def _send_half(self) -> None:
                body = (root / self.path.lstrip("/")).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def publish(self, url: str, source: Path) -> str:
        """Serve ``source`` under ``url``'s path; returns that path."""
        path = urlsplit(url).path
        dest = self.root / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        return path

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture()
def release_host(tmp_path: Path) -> Iterator[ReleaseHost]:
    host = ReleaseHost(tmp_path / "release-host")
    try:
        yield host
    finally:
        host.close()


@pytest.fixture()
def hanging_port() -> Iterator[int]:
    """A loopback port whose accept queue is full: a connect there waits until its timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = int(server.getsockname()[1])
    filler = socket.create_connection(("127.0.0.1", port))  # takes the queue's only place
    try:
        yield port
    finally:
        filler.close()
        server.close()


@pytest.fixture(scope="session")
def published_r50(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The published Kinetics-400 TSM-R50's layout (official format, ``module.`` keys) under its
    published name, with seeded random weights stored in fp16 (half the bytes to serve and hash)."""
    import torch

    from model_store.tsm import build_tsm
    from workers.weights import find_model

    torch.manual_seed(0)
    model = build_tsm("resnet50", num_classes=400, num_segments=8)
    state = {f"module.{k}": v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("published") / find_model("tsm-r50-kinetics400").filename
    torch.save({"state_dict": state, "arch": "resnet50"}, path)
    return path
