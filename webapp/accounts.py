"""Pages for accounts: the login form and logout, everyone's My tokens page, and the admins' Users page. They act
through `farm.users`, as `farm users create` and the API do; forms are CSRF-protected (`webapp.csrf`)."""

from __future__ import annotations

from flask import Blueprint, Flask, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from farm import users
from farm.errors import FarmError, Forbidden
from farm.models import Role, User
from webapp import auth, csrf
from webapp.api.users import token_json
from webapp.extensions import db
from webapp.limits import LOGIN_LIMIT

bp = Blueprint("accounts", __name__)
bp.before_request(csrf.check)


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site only, never another site's URL."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("pages.jobs")


@bp.route("/login", methods=["GET", "POST"])
@LOGIN_LIMIT
def login() -> Response | str | tuple[str, int]:
    if request.method == "GET":
        if auth.current_user() is not None:
            return redirect(_safe_next(request.args.get("next")), 303)
        return render_template("login.html", next=request.args.get("next", ""), username="")
    username = request.form.get("username", "")
    found = users.authenticate(db.session, username, request.form.get("password", ""))
    if found is None:
        context = {"next": request.form.get("next", ""), "username": username, "error": "Wrong name or password."}
        return render_template("login.html", **context), 401
    auth.sign_in(found)
    return redirect(_safe_next(request.form.get("next")), 303)


@bp.post("/logout")
def logout() -> Response:
    auth.sign_out()
    flash("Signed out.", "ok")
    return redirect(url_for("accounts.login"), 303)


def _token_rows(user: User) -> list[dict[str, object]]:
    return [token_json(t) for t in users.tokens_of(db.session, user)]


@bp.get("/tokens")
def my_tokens() -> str:
    me = auth.user()
    return render_template("tokens.html", tokens=_token_rows(me), new_token=None)


@bp.post("/tokens")
def create_my_token() -> str | tuple[str, int]:
    """The new token is on this answer's page only; it is stored as a hash and never shown again."""
    me = auth.user()
    try:
        made = users.create_token(db.session, me, request.form.get("name", ""), actor=me.name)
    except FarmError as exc:
        db.session.rollback()
        flash(exc.message, "error")
        return render_template("tokens.html", tokens=_token_rows(me), new_token=None), exc.status
    db.session.commit()
    return render_template("tokens.html", tokens=_token_rows(me), new_token=made.secret)


@bp.post("/tokens/<int:token_id>/revoke")
def revoke_token(token_id: int) -> Response:
    """Revoke one of your own tokens; an admin any (from the Users page, where the form sends them back)."""
    row = users.find_token(db.session, str(token_id))
    if row.user_id != auth.user().id:
        auth.require(Role.ADMIN, "revoking another user's token")
    users.revoke(db.session, row, actor=auth.current_actor())
    db.session.commit()
    flash(f"Token {row.prefix}… revoked; it no longer works.", "ok")
    back = url_for("accounts.users_page") if request.form.get("back") == "users" else url_for("accounts.my_tokens")
    return redirect(back, 303)


@bp.get("/users")
def users_page() -> str:
    auth.require(Role.ADMIN, "the Users page")
    everyone = db.session.scalars(db.select(User).order_by(User.name)).all()
    return render_template("users.html", users=[(u, _token_rows(u)) for u in everyone], roles=list(Role))


@bp.post("/users")
def create_user() -> Response | tuple[str, int]:
    auth.require(Role.ADMIN, "creating users")
    try:
        made = users.create_user(
            db.session,
            request.form.get("name", ""),
            users.parse_role(request.form.get("role", "")),
            request.form.get("password") or None,
            actor=auth.current_actor(),
        )
    except FarmError as exc:
        db.session.rollback()
        flash(f"{exc.message}", "error")
        return redirect(url_for("accounts.users_page"), 303)
    db.session.commit()
    flash(f"User {made.name} created ({made.role}).", "ok")
    return redirect(url_for("accounts.users_page"), 303)


@bp.post("/users/<name>")
def change_user(name: str) -> Response:
    """One change to a user, named by the form's `action`: role, disable, enable or password."""
    me = auth.require(Role.ADMIN, "changing users")
    target = users.find_user(db.session, name)
    action = request.form.get("action", "")
    try:
        if target.id == me.id and action in ("role", "disable"):
            raise Forbidden("you cannot demote or disable yourself; another admin can")
        if action == "role":
            users.set_role(db.session, target, users.parse_role(request.form.get("role", "")), actor=me.name)
            done = f"{name}'s role is now {target.role}."
        elif action in ("disable", "enable"):
            users.set_disabled(db.session, target, action == "disable", actor=me.name)
            done = f"{name} is {action}d."
            if action == "disable":
                done += " Their sessions and tokens stop working."
        elif action == "password":
            users.set_password(db.session, target, request.form.get("password", ""), actor=me.name)
            done = f"{name}'s password is reset; their sessions are signed out."
        else:
            raise FarmError("action", "unknown_choice", "action must be role, disable, enable or password")
    except FarmError as exc:
        db.session.rollback()
        flash(exc.message, "error")
        return redirect(url_for("accounts.users_page"), 303)
    db.session.commit()
    flash(done, "ok")
    return redirect(url_for("accounts.users_page"), 303)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
