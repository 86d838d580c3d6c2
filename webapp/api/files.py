"""Project files, content-addressed (the contract's "Project files"): ask which are missing, upload each missing one
by its sha256 (checked as it arrives), then submit a job naming them in a `manifest`."""

from __future__ import annotations

from flask import Response, jsonify, request

from farm.errors import ValidationError
from farm.projects import SHA256, blob_store, blocks, parse_blob
from webapp import services
from webapp.api import bp
from webapp.extensions import db

MAX_CHECK = 100_000


@bp.post("/files/check")
def check_files() -> Response:
    """`{"files": [{"sha256", "size"}, …]}` → `{"missing": [{"sha256", "size"}, …]}`: what to upload."""
    body = request.get_json(silent=True)
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(files, list):
        raise ValidationError("files", "missing", 'send {"files": [{"sha256": hex, "size": bytes}, …]} as JSON')
    if len(files) > MAX_CHECK:
        raise ValidationError("files", "too_many_files", f"check at most {MAX_CHECK} files at once")
    lacking = blob_store.missing(db.session, [parse_blob(f, "files") for f in files])
    return jsonify({"missing": [{"sha256": b.sha256, "size": b.size} for b in lacking]})


@bp.put("/files/<sha256>")
def put_file(sha256: str) -> tuple[Response, int]:
    """The raw bytes of one file; 201 when stored, 200 when the farm had it, 422 `checksum_mismatch`."""
    if not SHA256.match(sha256):
        raise ValidationError("sha256", "bad_sha256", "the URL must end with the file's sha256 (64 lowercase hex)")
    new = blob_store.receive(db.session, services.storage(), services.settings(), sha256, blocks(request.stream))
    db.session.commit()
    return jsonify({"sha256": sha256, "stored": new}), 201 if new else 200
