"""Users and API tokens over the API: who am I, my tokens (create, list, revoke), and the admins' user list."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request

from farm import users
from farm.errors import NotFound, ValidationError
from farm.models import ApiToken, Role, User
from webapp import auth
from webapp.api import bp
from webapp.api.serializers import iso
from webapp.extensions import db


def user_json(user: User) -> dict[str, Any]:
    return {"name": user.name, "role": user.role, "disabled": user.disabled, "created_at": iso(user.created_at)}


def token_json(row: ApiToken) -> dict[str, Any]:
    """A token as lists show it: never the token itself, only its first characters."""
    return {
        "id": row.id,
        "prefix": row.prefix,
        "name": row.name,
        "user": row.user.name,
        "created_at": iso(row.created_at),
        "last_used_at": iso(row.last_used_at),
        "revoked_at": iso(row.revoked_at),
    }


def _text(body: dict[str, Any], field: str) -> str:
    """A text field of the body ("" when absent); anything but a string is a 400 naming it."""
    value = body.get(field, "")
    if value is None or not isinstance(value, str):
        raise ValidationError(field, "not_text", f"{field} must be a string")
    return value


def _body() -> dict[str, Any]:
    """The fields sent: none without a body, a form's, or a JSON object's; anything else is a 400."""
    if not request.content_length:
        return {}
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return request.form.to_dict()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError(None, "bad_body", "send a JSON object (or a form)")
    return body


@bp.get("/me")
def me() -> Response:
    return jsonify({"user": user_json(auth.user())})


@bp.get("/users")
def list_users() -> Response:
    auth.require(Role.ADMIN, "listing users")
    return jsonify({"users": [user_json(u) for u in db.session.scalars(db.select(User).order_by(User.name))]})


@bp.post("/users")
def create_user() -> tuple[Response, int]:
    """`{"name", "role", "password"?}` → 201 `{"user"}`."""
    auth.require(Role.ADMIN, "creating users")
    body = _body()
    made = users.create_user(
        db.session,
        _text(body, "name"),
        users.parse_role(_text(body, "role")),
        _text(body, "password") or None,
        actor=auth.current_actor(),
    )
    db.session.commit()
    return jsonify({"user": user_json(made)}), 201


@bp.get("/tokens")
def list_tokens() -> Response:
    """Your tokens, newest first; an admin may name another user with `?user=`."""
    me_ = auth.user()
    name = request.args.get("user", "").strip()
    if name and name != me_.name:
        auth.require(Role.ADMIN, "listing another user's tokens")
        me_ = users.find_user(db.session, name)
    return jsonify({"tokens": [token_json(t) for t in users.tokens_of(db.session, me_)]})


@bp.post("/tokens")
def create_token() -> tuple[Response, int]:
    """`{"name"?}` → 201 `{"token": "farm_…", …}`: the only time the token itself is sent."""
    made = users.create_token(db.session, auth.user(), _text(_body(), "name"), actor=auth.current_actor())
    db.session.commit()
    return jsonify({**token_json(made.row), "token": made.secret}), 201


@bp.post("/tokens/revoke")
def revoke_token() -> Response:
    """`{"token": "farm_…"}` or `{"id": n}` (in the body, so a token never lands in an access log's URL). Yours,
    or anyone's for an admin; another user's token is not found for anyone else."""
    body = _body()
    token, token_id = body.get("token"), body.get("id")
    which = str(token) if token else "" if token_id is None else str(token_id)
    if not which:
        raise ValidationError("token", "missing", 'send {"token": "farm_…"} or {"id": n}')
    row = users.find_token(db.session, which)
    if row.user_id != auth.user().id and not auth.may(Role.ADMIN):
        raise NotFound("token")
    users.revoke(db.session, row, actor=auth.current_actor())
    db.session.commit()
    return jsonify({"token": token_json(row)})
