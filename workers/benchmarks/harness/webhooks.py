"""A webhook receiver on a free loopback port that counts deliveries per (job id, outcome)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    """Answers every POST with 204 and counts it under its body's ``job_id`` and ``status``."""

    def __init__(self) -> None:
        self.deliveries: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    payload = json.loads(body)
                    key = (str(payload["job_id"]), str(payload["status"]))
                except (ValueError, KeyError, TypeError):
                    self.send_response(400)
                    self.end_headers()
                    return
                with receiver._lock:
                    receiver.deliveries[key] += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def of(self, job_id: str) -> dict[str, int]:
        """Deliveries for one job by outcome."""
        with self._lock:
            return {status: n for (job, status), n in self.deliveries.items() if job == job_id}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
