"""The JSON API under /api, one module per noun."""

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api")

from webapp.api import files, jobs, monitor, openapi, users, workers  # noqa: E402,F401  (routes register on import)
