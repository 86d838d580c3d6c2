"""Every error under /api is the contract's JSON: a code, a message a person can act on, the field at fault.
Never an HTML page, never a stack trace.
"""

from __future__ import annotations

import logging
import shutil

from flask import Flask, Response, jsonify, render_template, request
from flask_limiter.errors import RateLimitExceeded
from werkzeug.exceptions import HTTPException

from farm.config import Settings
from farm.errors import FULL_ERRNOS, FarmError, InsufficientStorage
from webapp.limits import retry_after

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, field: str | None = None) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message, "field": field}}), status


ErrorAnswer = tuple[Response, int, dict[str, str]]


def farm_error_response(exc: FarmError) -> ErrorAnswer:
    return jsonify(exc.to_json()), exc.status, exc.headers()


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.path == "/api"


def error_page(status: int, title: str, message: str) -> tuple[str, int]:
    """The pages' own error page (the API answers JSON instead)."""
    return render_template("error.html", status=status, title=title, message=message), status


STAGING = frozenset({"api.submit_job", "pages.create_job", "pages.stage_upload", "pages.staged_scene"})


def room_to_stage(settings: Settings) -> None:
    """Before an upload is saved or probed: 507 while the web host's disk (its instance folder, where uploads are
    staged, and its cache, where the probe's Blender runs) is under FARM_MIN_FREE_GB."""
    if request.method != "POST" or request.endpoint not in STAGING:
        return
    for folder in (settings.instance_dir, settings.cache_dir):
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free
        if free < settings.min_free_bytes:
            raise InsufficientStorage(
                f"the web host has {free >> 20} MiB free under {folder.name}/, below FARM_MIN_FREE_GB; try again later"
            )


def init_app(app: Flask, settings: Settings) -> None:
    app.before_request(lambda: room_to_stage(settings))

    @app.errorhandler(FarmError)
    def farm_error(exc: FarmError):  # type: ignore[no-untyped-def]
        if not _wants_json() and request.method == "GET":
            title = "Not found" if exc.status == 404 else "That did not work"
            return (*error_page(exc.status, title, exc.message), exc.headers())
        return farm_error_response(exc)

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(exc: RateLimitExceeded):  # type: ignore[no-untyped-def]
        """Past FARM_SUBMIT_LIMIT or FARM_LOGIN_LIMIT."""
        wait = {"Retry-After": str(retry_after())}
        message = f"too many requests: this farm allows {exc.limit.limit} here; try again in {wait['Retry-After']} s"
        if not _wants_json():
            return (*error_page(429, "Too many requests", message), wait)
        return (*error_response(429, "rate_limited", message), wait)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):  # type: ignore[no-untyped-def]
        if not _wants_json():
            return error_page(exc.code or 500, exc.name or "Error", exc.description or "")
        status = exc.code or 500
        if status == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH") or 0
            return error_response(413, "too_large", f"the upload is larger than {limit // 2**20} MiB", "file")
        code = (exc.name or "error").lower().replace(" ", "_")
        # the exception's own headers, such as a 405's Allow (which HTTP requires), on the JSON answer too
        headers = {name: value for name, value in exc.get_headers() if name.lower() != "content-type"}
        return (*error_response(status, code, exc.description or exc.name or "error"), headers)

    @app.errorhandler(OSError)
    def os_error(exc: OSError):  # type: ignore[no-untyped-def]
        """A write that found the disk full, in staging or in the probe's Blender: 507, saying so."""
        if exc.errno in FULL_ERRNOS:
            log.error("disk full on %s %s: %s", request.method, request.path, exc)
            return farm_error(InsufficientStorage(f"the web host's disk is full ({exc.strerror}); try again later"))
        return unexpected(exc)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):  # type: ignore[no-untyped-def]
        log.exception("unhandled error on %s %s", request.method, request.path)
        if not _wants_json():
            return "Internal server error", 500
        return error_response(500, "internal_error", "the farm hit an unexpected error; it has been logged")
