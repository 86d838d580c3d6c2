"""Request rates (flask-limiter), counted in the broker's Redis when there is one (every web process shares the
counts), else in the process' memory. Views are limited by name: `SUBMIT_LIMIT` (per user, FARM_SUBMIT_LIMIT) and
`LOGIN_LIMIT` (per client address, FARM_LOGIN_LIMIT), decorating the view under its route decorator. Past a limit
the answer is 429 `rate_limited` (webapp.errors), with Retry-After (`retry_after`).
"""

from __future__ import annotations

import math
import time

from flask import Flask, current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from farm.config import Settings
from webapp.auth import current_actor

# No rate headers on every answer: they would overwrite a 503's own Retry-After. A 429 sets its own (retry_after).
limiter = Limiter(key_func=get_remote_address, swallow_errors=True)


def _settings() -> Settings:
    return current_app.extensions["farm"]


SUBMIT_LIMIT = limiter.shared_limit(
    lambda: _settings().submit_limit or "",
    scope="submit",
    key_func=current_actor,  # the user: one user's flood does not lock out the others behind the same proxy
    exempt_when=lambda: _settings().submit_limit is None,
)
LOGIN_LIMIT = limiter.shared_limit(
    lambda: _settings().login_limit or "",
    scope="login",  # by address: nobody is logged in yet, and a guesser tries many names
    methods=["POST"],  # attempts, not views of the form
    exempt_when=lambda: _settings().login_limit is None,
)


def retry_after() -> int:
    """Seconds until the limit the current request broke lets requests in again."""
    breached = limiter.current_limit
    return max(1, math.ceil(breached.reset_at - time.time())) if breached else 1


def init_limiter(app: Flask, settings: Settings) -> None:
    """Counts are kept under the farm's queue name, so farms sharing one Redis count apart."""
    app.config.update(
        RATELIMIT_STORAGE_URI=settings.rate_limit_storage, RATELIMIT_KEY_PREFIX=f"farm-rate:{settings.queue}"
    )
    limiter.init_app(app)
