"""Users, roles and API tokens, outside any web request: the web app, `farm users create` and `farm demo` all use
these functions against the same tables.

Passwords are hashed with scrypt (memory-hard; Werkzeug's implementation, so no new dependency). API tokens are 256
random bits behind a visible `farm_` prefix (so a leaked one is recognisable, by people and by secret scanners);
only their SHA-256 is stored, which is safe for a random secret of that size and lets a request find its row with
one indexed lookup.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload
from werkzeug.security import check_password_hash, generate_password_hash

from farm.clock import aware
from farm.errors import Conflict, NotFound, ValidationError
from farm.jobs.inputs import DB_INT_MAX, has_control_characters
from farm.models import ApiToken, Event, Role, User, utcnow

TOKEN_PREFIX = "farm_"
SHOWN_CHARS = len(TOKEN_PREFIX) + 8  # what lists show of a token: enough to tell which one leaked
ROLE_RANK = {Role.VIEWER: 0, Role.ARTIST: 1, Role.ADMIN: 2}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD = 8
LAST_USED_STEP = timedelta(minutes=1)  # a token used in a loop writes its row once a minute, not per request
PASSWORD_METHOD = "scrypt"
_DUMMY_HASH = generate_password_hash(secrets.token_hex(16), method=PASSWORD_METHOD)


def at_least(user: User, role: Role) -> bool:
    return ROLE_RANK[Role(user.role)] >= ROLE_RANK[role]


def parse_role(value: str) -> Role:
    try:
        return Role(value.strip().lower())
    except ValueError:
        raise ValidationError("role", "unknown_choice", f"role must be one of {', '.join(Role)}") from None


def check_name(name: str) -> str:
    name = name.strip()
    if not NAME.fullmatch(name):
        raise ValidationError(
            "name", "bad_name", "a user name is 1-64 letters, digits and . _ @ -, starting with a letter or digit"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValidationError("password", "too_short", f"a password has at least {MIN_PASSWORD} characters")
    return password


def hash_password(password: str) -> str:
    return generate_password_hash(check_password(password), method=PASSWORD_METHOD)


def count_users(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User)) or 0


def find_user(session: Session, name: str) -> User:
    user = session.scalars(select(User).where(User.name == name)).one_or_none()
    if user is None:
        raise NotFound(f"user {name}")
    return user


def audit(session: Session, user: User, change: str, actor: str, reason: str | None = None) -> None:
    """One row of the audit trail (`events`, kind `user`, subject the account) per change to an account: who did
    what to whom, next to the jobs' and workers' trails."""
    session.add(Event(kind="user", subject=user.name, new=change, reason=reason, actor=actor))


def create_user(session: Session, name: str, role: Role, password: str | None = None, *, actor: str) -> User:
    name = check_name(name)
    if session.scalars(select(User.id).where(User.name == name)).first() is not None:
        raise Conflict(f"a user named {name} already exists")
    user = User(name=name, role=role, password_hash=hash_password(password) if password else None)
    session.add(user)
    session.flush()
    audit(session, user, "created", actor, f"role {role}")
    return user


def set_role(session: Session, user: User, role: Role, *, actor: str) -> None:
    audit(session, user, "role", actor, f"{user.role} -> {role}")
    user.role = role


def authenticate(session: Session, name: str, password: str) -> User | None:
    """The user whose name and password these are, and who may sign in; None otherwise (in about the same time
    whether the name exists or not, so the form does not tell which names do)."""
    user = session.scalars(select(User).where(User.name == name.strip())).one_or_none()
    if user is None or not user.password_hash:
        check_password_hash(_DUMMY_HASH, password)
        return None
    if not check_password_hash(user.password_hash, password) or user.disabled:
        return None
    return user


def set_password(session: Session, user: User, password: str, *, actor: str) -> None:
    user.password_hash = hash_password(password)
    user.session_epoch += 1
    audit(session, user, "password", actor, "password reset; sessions ended")


def set_disabled(session: Session, user: User, disabled: bool, *, actor: str) -> None:
    user.disabled = disabled
    user.session_epoch += 1
    audit(session, user, "disabled" if disabled else "enabled", actor)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class NewToken:
    """A token just made: `secret` is shown once and never stored."""

    row: ApiToken
    secret: str


def create_token(session: Session, user: User, name: str = "", *, actor: str) -> NewToken:
    if len(name) > 100:
        raise ValidationError("name", "too_long", "a token's name is at most 100 characters")
    if has_control_characters(name):
        raise ValidationError("name", "control_characters", "a token's name is plain text, without control characters")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user=user, token_hash=token_hash(secret), prefix=secret[:SHOWN_CHARS], name=name.strip())
    session.add(row)
    session.flush()
    audit(session, user, "token_created", actor, f"token {row.id} {row.prefix}… {row.name}".rstrip())
    return NewToken(row, secret)


def user_for_token(session: Session, secret: str) -> User | None:
    """The live user a token belongs to, or None (unknown, revoked, or its user disabled); notes its last use."""
    if not secret.startswith(TOKEN_PREFIX):
        return None
    row = session.scalars(
        select(ApiToken).where(ApiToken.token_hash == token_hash(secret)).options(joinedload(ApiToken.user))
    ).one_or_none()  # with its user: one query per API request, not two
    if row is None or row.revoked_at is not None or row.user.disabled:
        return None
    now = utcnow()
    if row.last_used_at is None or aware(row.last_used_at) < now - LAST_USED_STEP:
        row.last_used_at = now
        session.commit()
    return row.user


def find_token(session: Session, token_or_id: str) -> ApiToken:
    """A token by its listed id or by the token itself."""
    value = token_or_id.strip()
    if value.isdigit():
        row = session.get(ApiToken, int(value)) if len(value) <= 10 and int(value) <= DB_INT_MAX else None
    else:
        row = session.scalars(select(ApiToken).where(ApiToken.token_hash == token_hash(value))).one_or_none()
    if row is None:
        raise NotFound("token")
    return row


def revoke(session: Session, row: ApiToken, *, actor: str) -> None:
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit(session, row.user, "token_revoked", actor, f"token {row.id} {row.prefix}…")


def tokens_of(session: Session, user: User) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id.desc())))
