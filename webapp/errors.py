"""Every error under /api is the contract's JSON: a code, a message a person can act on, the field at fault.
Never an HTML page, never a stack trace.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from farm.errors import FarmError
from farm.states import IllegalTransition

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, field: str | None = None) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message, "field": field}}), status


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.path == "/api"


def error_page(status: int, title: str, message: str) -> tuple[str, int]:
    """The pages' own error page (the API answers JSON instead)."""
    return render_template("error.html", status=status, title=title, message=message), status


def init_app(app: Flask) -> None:
    @app.errorhandler(FarmError)
    def farm_error(exc: FarmError):  # type: ignore[no-untyped-def]
        if not _wants_json() and request.method == "GET":
            return error_page(exc.status, "Not found" if exc.status == 404 else "That did not work", exc.message)
        return jsonify(exc.to_json()), exc.status

    @app.errorhandler(IllegalTransition)
    def illegal_transition(exc: IllegalTransition):  # type: ignore[no-untyped-def]
        return error_response(409, "wrong_state", f"the {exc.kind} is {exc.old}; it cannot become {exc.new}")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):  # type: ignore[no-untyped-def]
        if not _wants_json():
            return error_page(exc.code or 500, exc.name or "Error", exc.description or "")
        status = exc.code or 500
        if status == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH") or 0
            return error_response(413, "too_large", f"the upload is larger than {limit // 2**20} MiB", "file")
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(status, code, exc.description or exc.name or "error")

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):  # type: ignore[no-untyped-def]
        log.exception("unhandled error on %s %s", request.method, request.path)
        if not _wants_json():
            return "Internal server error", 500
        return error_response(500, "internal_error", "the farm hit an unexpected error; it has been logged")
