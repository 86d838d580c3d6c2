"""CSRF protection for the pages' forms: a random token in the signed session cookie, echoed by every form (a
hidden field) or script (the X-CSRF-Token header), checked on each unsafe request a page makes."""

from __future__ import annotations

import hmac
import secrets

from flask import Flask, abort, g, request, session

FIELD = "csrf_token"
HEADER = "X-CSRF-Token"


def token() -> str:
    if FIELD not in session:
        session[FIELD] = secrets.token_urlsafe(32)
    return session[FIELD]


def valid() -> bool:
    """Does the request carry this browser's token (a form field, or the header scripts send)?"""
    sent = request.headers.get(HEADER) or request.form.get(FIELD) or ""
    expected = session.get(FIELD)
    return bool(expected) and hmac.compare_digest(sent, expected)


def check() -> None:
    """Refuse a page's POST whose token is missing or not this browser's. A request signed in with a Bearer token
    needs none: no browser adds that header on another site's behalf."""
    if request.method in ("GET", "HEAD", "OPTIONS") or g.get("via") == "token":
        return
    if not valid():
        abort(400, description="The form expired or came from another site; reload the page and try again.")


def init_app(app: Flask) -> None:
    app.jinja_env.globals["csrf_token"] = token
