"""The web app: the JSON API under /api and the pages people use. Built by `create_app`, one `init_app` per part."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from farm.blender.launcher import SPARE_PROBE
from farm.celery_app import make_celery
from farm.config import Settings, load_settings, require_secret_key
from farm.db import engine_options, init_db
from farm.storage import open_storage
from farm.webhooks import courier
from webapp import accounts, auth, errors, guards, metrics, pages, security
from webapp.api import bp as api_bp
from webapp.extensions import db
from webapp.limits import init_limiter


def create_app(settings: Settings | None = None, config: Mapping[str, Any] | None = None) -> Flask:
    settings = settings or load_settings()
    require_secret_key(settings)  # `farm web` checks first, in one line; this guards any other WSGI server
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        SQLALCHEMY_ENGINE_OPTIONS=engine_options(settings.database_url),
        MAX_CONTENT_LENGTH=settings.max_upload_bytes + 2**20,  # the form fields ride along with the file
        MAX_FORM_MEMORY_SIZE=2**20,
        JSON_SORT_KEYS=False,
    )
    app.config.update(config or {})
    app.extensions["farm"] = settings
    app.extensions["farm.storage"] = storage = open_storage(settings)
    app.extensions["celery"] = make_celery(settings)

    db.init_app(app)
    init_limiter(app, settings)
    with app.app_context():
        init_db(db.engine)
    storage.ensure_ready()
    SPARE_PROBE.refill(settings)  # the first submission's probe need not wait for Blender to start

    security.init_app(app, settings, storage)
    errors.init_app(app, settings)
    guards.init_app(app)
    auth.init_app(app)
    app.register_blueprint(api_bp)
    app.register_blueprint(metrics.bp)
    courier.install(settings)  # the webhooks of the jobs this process cancels go out from here
    pages.init_app(app)
    accounts.init_app(app)
    return app
