"""Browser-side hardening on every response, pages and API alike, and the session cookie's flags.

The pages run only the farm's own script and stylesheet, so the Content Security Policy forbids inline scripts and
styles; data rides in `<script type="application/json">` blocks, which are never run. The one inline `<style>` (a
job's frame proportions, needed before the first paint) carries a nonce made for that response. Images may also come
from the storage's presigned URLs, whose origin is that of the S3 endpoint browsers reach (`FARM_S3_PUBLIC_URL`): the
frame and thumbnail links redirect there; so may the preview movie (`media-src`), whose link redirects there too.
"""

from __future__ import annotations

import secrets

from flask import Flask, Response, g
from werkzeug.middleware.proxy_fix import ProxyFix

from farm.config import Settings
from farm.storage import Storage


def csp_nonce() -> str:
    """This response's nonce for an inline `<style>`; the policy names it only when a template asked for one."""
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    return g.csp_nonce


def content_security_policy(image_origin: str | None, nonce: str | None) -> str:
    return "; ".join(
        [
            "default-src 'self'",
            " ".join(filter(None, ["img-src 'self'", image_origin])),
            " ".join(filter(None, ["media-src 'self'", image_origin])),
            " ".join(filter(None, ["style-src 'self'", nonce and f"'nonce-{nonce}'"])),
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def init_app(app: Flask, settings: Settings, storage: Storage) -> None:
    image_origin = storage.browser_origin()
    headers = {
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
        "Referrer-Policy": "same-origin",
    }
    app.config.update(SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_SECURE=settings.https)
    app.jinja_env.globals["csp_nonce"] = csp_nonce
    if settings.https:
        # TLS ends at the proxy in front: trust its X-Forwarded-Proto and -For (one hop), so the links the API
        # builds say https and events name the real client
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)  # type: ignore[method-assign]

    @app.after_request
    def harden(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = content_security_policy(image_origin, g.get("csp_nonce"))
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        return response
