"""Who is asking, and whether they may: every request passes `gate` before its view runs, so every route, present or
future, needs a user unless it is named in PUBLIC, and every unsafe one needs an artist unless named in SELF_SERVICE.
Finer rules (whose job, which role) are the `require*` functions, the one place views and templates ask.

Credentials: an API token (`Authorization: Bearer farm_…`), or the session cookie the login page signs. A cookie is
sent by the browser on its own, so a request that rides on one and changes something must also come from this site
(`Sec-Fetch-Site`, `Origin`) and carry this session's CSRF token; a Bearer token is never sent on its own.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Flask, g, redirect, request, session, url_for
from werkzeug.wrappers import Response

from farm import users
from farm.errors import Forbidden, Unauthenticated
from farm.models import Role, User
from webapp import csrf
from webapp.extensions import db

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC = frozenset({"api.health", "accounts.login", "static", "metrics.scrape"})  # /metrics: see the README
# Unsafe requests any signed-in user may make, a viewer too: on their own session and their own tokens.
SELF_SERVICE = frozenset(
    {"accounts.logout", "accounts.create_my_token", "accounts.revoke_token", "api.create_token", "api.revoke_token"}
)
SESSION_DAYS = 14
MAX_PRIORITY_FOR_ARTISTS = 5


def current_user() -> User | None:
    return g.get("user")


def user() -> User:
    """The signed-in user of a request that passed the gate (only PUBLIC routes may lack one)."""
    found = current_user()
    if found is None:
        raise Unauthenticated()
    return found


def current_actor() -> str:
    """The requester's name as recorded in events and job ownership."""
    return user().name


def may(role: str) -> bool:
    found = current_user()
    return found is not None and users.at_least(found, Role(role))


def require(role: Role, doing: str) -> User:
    """The user, if their role is at least `role`; else 403 saying what needed it."""
    found = user()
    if not users.at_least(found, role):
        raise Forbidden(f"{doing} needs the {role} role; {found.name} is a {found.role}")
    return found


def may_act_on(owner: str | None) -> bool:
    """Cancel, retry or delete a job owned by `owner`: an admin any job, an artist their own."""
    found = current_user()
    if found is None:
        return False
    return users.at_least(found, Role.ADMIN) or (users.at_least(found, Role.ARTIST) and owner == found.name)


def require_job_action(owner: str | None, doing: str) -> None:
    """The check every job action (cancel, retry, delete) makes before it changes anything."""
    if not may_act_on(owner):
        found = user()
        whose = "their own jobs" if users.at_least(found, Role.ARTIST) else "no jobs (a viewer only looks)"
        raise Forbidden(f"{found.name} may not {doing} this job: a {found.role} may act on {whose}")


def require_priority(priority: int) -> None:
    if priority > MAX_PRIORITY_FOR_ARTISTS and not may(Role.ADMIN):
        raise Forbidden(f"priorities above {MAX_PRIORITY_FOR_ARTISTS} are for admins", field="priority")


def sign_in(found: User) -> None:
    """A fresh session (a new CSRF token too, so one planted before the login is worthless), kept for SESSION_DAYS
    across restarts: it is a cookie signed with FARM_SECRET_KEY, holding the user's id and session epoch."""
    session.clear()
    session.permanent = True
    session["user_id"], session["epoch"] = found.id, found.session_epoch


def sign_out() -> None:
    session.clear()


def _from_token(header: str) -> User:
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated("the Authorization header must be `Bearer <token>`")
    found = users.user_for_token(db.session, secret.strip())
    if found is None:
        raise Unauthenticated("the API token is unknown or revoked, or its user is disabled")
    return found


def _from_session() -> User | None:
    user_id = session.get("user_id")
    if not isinstance(user_id, int):
        return None
    found = db.session.get(User, user_id)
    if found is None or found.disabled or session.get("epoch") != found.session_epoch:
        session.clear()  # disabled, or its password was reset since: this cookie is void
        return None
    return found


def cross_site() -> bool:
    """Did another site's page send this? Browsers say so in Sec-Fetch-Site; older ones at least send Origin."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return True
    origin = request.headers.get("Origin")
    return origin is not None and origin != request.host_url.rstrip("/")


def _is_api() -> bool:
    return request.path.startswith("/api/") or request.path == "/api"


def gate() -> Response | None:
    g.user, g.via = None, None
    endpoint = request.endpoint
    header = request.headers.get("Authorization")
    if header is not None and endpoint not in PUBLIC:
        g.user, g.via = _from_token(header), "token"
    else:
        g.user = _from_session()
        g.via = "session" if g.user else None
    if endpoint is None:  # no such route: its 404 (with the header of whoever is signed in)
        return None
    unsafe = request.method not in SAFE_METHODS
    if unsafe and g.via != "token" and cross_site():
        raise Forbidden("cross-site requests are refused; use the farm's own pages, or an API token")
    if endpoint in PUBLIC:
        return None
    if g.user is None:
        if _is_api() or unsafe:
            raise Unauthenticated()
        return redirect(url_for("accounts.login", next=request.full_path.rstrip("?")))
    if unsafe and g.via == "session" and _is_api() and not csrf.valid():
        raise Forbidden("a request made with a session cookie must carry its CSRF token (the X-CSRF-Token header)")
    if unsafe and endpoint not in SELF_SERVICE:
        require(Role.ARTIST, "changing anything")
    return None


def init_app(app: Flask) -> None:
    app.config.setdefault("PERMANENT_SESSION_LIFETIME", timedelta(days=SESSION_DAYS))
    app.before_request(gate)
    app.jinja_env.globals.update(current_user=current_user, may=may, may_act_on=may_act_on)
