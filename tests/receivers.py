"""Webhook receivers for tests: real HTTP servers on 127.0.0.1 that record every POST and check its signature as
a receiver would (HMAC-SHA256 of the raw body with the shared secret, compared in constant time)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic() on arrival
    path: str
    headers: dict[str, str]
    body: bytes
    signed: bool  # X-Farm-Signature matches the body under the receiver's secret

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """Answers each POST with the next of `codes` (200 once they run out); `on_post` runs before answering."""

    def __init__(self, secret: str, codes: tuple[int, ...] = (), on_post: Callable[[Received], None] | None = None):
        self.secret, self.codes, self.on_post = secret, list(codes), on_post
        self.received: list[Received] = []
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=t0ps3cret"

    def signature_ok(self, body: bytes, header: str | None) -> bool:
        expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        return header is not None and hmac.compare_digest(expected, header)

    @contextmanager
    def running(self) -> Iterator[Receiver]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                got = Received(
                    time.monotonic(),
                    self.path,
                    dict(self.headers.items()),
                    body,
                    receiver.signature_ok(body, self.headers.get("X-Farm-Signature")),
                )
                if receiver.on_post:
                    receiver.on_post(got)
                receiver.received.append(got)
                code = receiver.codes.pop(0) if receiver.codes else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()
            thread.join(5)
