"""Who is asking. The API is open until tokens land; this is the one place that will change when they do."""

from __future__ import annotations

from flask import request


def current_actor() -> str:
    """The requester's identity as recorded in events and job ownership."""
    return f"anonymous@{request.remote_addr or 'local'}"
