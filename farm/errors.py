"""Errors a user can cause: each carries the contract's code, a message a person can act on, and the field."""

from __future__ import annotations

import errno

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)  # what a write says when the disk (or the user's quota) is full


class FarmError(Exception):
    """Base of user-facing errors; `status` is the HTTP status the API answers with."""

    status = 400

    def __init__(self, field: str | None, code: str, message: str, **details: object) -> None:
        super().__init__(message)
        self.field, self.code, self.message = field, code, message
        self.details = details  # more of the error's object, e.g. the files a 422 `missing_files` lists

    def to_json(self) -> dict[str, dict[str, object]]:
        return {"error": {"code": self.code, "message": self.message, "field": self.field, **self.details}}

    def headers(self) -> dict[str, str]:
        """Response headers the answer needs besides the JSON (Retry-After, for one)."""
        return {}


class ValidationError(FarmError):
    """Bad input, naming the form field at fault."""


class Unprocessable(FarmError):
    """Well-formed, but the farm cannot render it as asked (a dependency or an uploaded file is missing)."""

    status = 422


class NotFound(FarmError):
    status = 404

    def __init__(self, what: str) -> None:
        super().__init__(None, "not_found", f"{what} not found")


class Conflict(FarmError):
    """The request is fine but the object is in the wrong state for it."""

    status = 409

    def __init__(self, message: str) -> None:
        super().__init__(None, "wrong_state", message)


class IllegalTransition(Conflict):
    """A change the state machine forbids, e.g. canceling a COMPLETED job."""

    def __init__(self, kind: str, subject: str, old: str, new: str) -> None:
        super().__init__(f"the {kind} is {old}; it cannot become {new}")
        self.kind, self.subject, self.old, self.new = kind, subject, old, new


class InsufficientStorage(FarmError):
    """This host's disk is too full to take the upload (or to let Blender read it): a 507 the client can retry
    later, not an obscure 500."""

    status = 507

    def __init__(self, message: str) -> None:
        super().__init__("file", "insufficient_storage", message)


class Unauthenticated(FarmError):
    """No credentials, or ones the farm does not accept (unknown, revoked, of a disabled user)."""

    status = 401

    def __init__(self, message: str = "sign in, or send an API token as `Authorization: Bearer <token>`") -> None:
        super().__init__(None, "unauthenticated", message)

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="farm"'}


class Forbidden(FarmError):
    """Known user, but their role (or the object's owner) does not allow this."""

    status = 403

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(field, "forbidden", message)
