"""gunicorn refuses some requests before the web app sees them: a request line or a header past its limits (414,
431), a malformed request (400). It answers those with an HTML page of its own; the contract promises JSON errors,
so `farm web` has gunicorn write the contract's shape instead.

gunicorn reads request lines of up to 8,190 bytes at most (REQUEST_LINE_LIMIT), so URLs between the web app's own
bound (`webapp.guards.MAX_URL_BYTES`) and that get the app's answer; only longer ones get this one.
"""

from __future__ import annotations

import json
import socket

from gunicorn import util

REQUEST_LINE_LIMIT = 8190  # gunicorn's highest (0 would mean unbounded: a request line buffered in memory)


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's `util.write_error`, with the contract's JSON body instead of HTML."""
    code = reason.lower().replace(" ", "_").replace("-", "_")
    body = json.dumps({"error": {"code": code, "message": f"{reason}: {mesg}" if mesg else reason, "field": None}})
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, (head + body).encode("latin-1"))


def install() -> None:
    """Before gunicorn forks its workers, which then inherit it."""
    util.write_error = write_json_error
