"""Checks every request passes before any view reads it, so every route, present or future, is covered: a URL
longer than MAX_URL_BYTES is answered 414, and a control character in any query parameter, path segment, form field
or upload's file name 400, naming the field (NUL would otherwise reach Postgres, which refuses it: a 500). Integer
path segments (`<int:…>`) are at most ten ASCII digits, and no more than DB_INT_MAX; anything else is no route, a 404.
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import Flask, request
from werkzeug.routing import IntegerConverter
from werkzeug.routing import ValidationError as RoutingValidationError

from farm.errors import FarmError, ValidationError
from farm.jobs.inputs import DB_INT_MAX, has_control_characters

# The path (decoded) and the query string (as sent). The farm's own longest URL, a search for a 200-character name
# in a script of three UTF-8 bytes a character, is 1,800 bytes percent-encoded; 4 KiB is gunicorn's default limit
# too. `farm web` lets gunicorn read request lines up to 8 KiB, so that longer URLs get this answer, in JSON.
MAX_URL_BYTES = 4096


class UriTooLong(FarmError):
    status = 414

    def __init__(self, length: int) -> None:
        super().__init__(
            None, "uri_too_long", f"the URL is {length} bytes long; this farm answers URLs of up to {MAX_URL_BYTES}"
        )


class BoundedInt(IntegerConverter):
    """`<int:…>` in routes: one to ten ASCII digits, and no more than an INTEGER column holds (Postgres refuses to
    compare one with a larger number: a 500)."""

    regex = r"[0-9]{1,10}"

    def to_python(self, value: str) -> int:
        number: int = super().to_python(value)
        if number > DB_INT_MAX:
            raise RoutingValidationError()
        return number


def _fields() -> Iterator[tuple[str, str]]:
    """Every piece of text the request carries, by the name of its field."""
    yield from request.args.items(multi=True)
    yield from ((name, value) for name, value in (request.view_args or {}).items() if isinstance(value, str))
    yield from request.form.items(multi=True)
    yield from ((name, file.filename or "") for name, file in request.files.items(multi=True))


def check_request() -> None:
    environ = request.environ
    length = len(environ.get("PATH_INFO", "")) + len(environ.get("QUERY_STRING", ""))
    if length > MAX_URL_BYTES:
        raise UriTooLong(length)
    for field, value in _fields():
        if has_control_characters(field) or has_control_characters(value):
            raise ValidationError(field, "bad_characters", f"{field!r} must not contain control characters")


def init_app(app: Flask) -> None:
    """Before any route is added: the converter applies to the rules as they are added."""
    app.url_map.converters["int"] = BoundedInt
    app.before_request(check_request)
