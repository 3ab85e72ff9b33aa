"""A real local webhook receiver for the alert tests: an HTTP server on a free port of 127.0.0.1 that
keeps each POSTed JSON body and answers ``status`` (200 unless a test sets another)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """``bodies``: what arrived, in order; ``status``: the code it answers; ``url``: where to send,
    with a query token the alert code must never log; ``close()`` stops it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.bodies.append(body)
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=s3cret"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
