"""Jobs: submit, list and search, read, cancel, retry, delete; their frames, chunks, logs, events and the zip."""

from __future__ import annotations

import logging

from flask import Response, jsonify, redirect, request, send_file, url_for
from sqlalchemy import func, select

from farm.errors import Conflict, NotFound
from farm.jobs import planning
from farm.jobs.inputs import DB_INT_MAX
from farm.jobs.submission import discard_upload, parse_form, save_upload
from farm.models import Chunk, ChunkStatus, Event, Frame, FrameStatus, Job
from farm.projects import blob_store, parse_manifest
from farm.storage.local import FileStorage
from farm.storage.previews import PREVIEWABLE, THUMBNAIL_TYPE, thumbnail_key
from webapp import actions, live, services
from webapp.api import bp
from webapp.api.serializers import FRAME_COLUMNS, chunk_json, event_json, frame_json, jobs_json, unclaimed_frame_json
from webapp.extensions import db
from webapp.limits import SUBMIT_LIMIT
from webapp.queries import get_job, job_search, one_job, query_int, query_statuses

log = logging.getLogger(__name__)
FRAMES_PAGE = 10_000  # frames a `GET /api/jobs/<id>/frames` answers with at most (and by default)
CHUNKS_PAGE = 1000  # chunks a `GET /api/jobs/<id>/chunks` answers with at most (and by default)


@bp.post("/jobs")
@SUBMIT_LIMIT
def submit_job() -> tuple[Response, int, dict[str, str]]:
    """Upload a .blend (or a .zip project with `main`), or name a project of uploaded files (`manifest`), and the
    render settings; answers 201 with the job."""
    settings = services.settings()
    form = parse_form(request.form, settings)
    actions.authorize_submission(form)
    if request.form.get("manifest") and "file" not in request.files:
        manifest = parse_manifest(request.form["manifest"])
        blob_store.require(db.session, manifest)
        job = actions.submit_project(manifest, form)
        return jsonify(one_job(job)), 201, {"Location": url_for("api.read_job", job_id=job.id)}
    upload_file = request.files.get("file")
    upload = save_upload(
        upload_file.stream if upload_file else None, upload_file.filename if upload_file else None, settings
    )
    try:
        job = actions.submit_upload(upload, form)
    finally:
        discard_upload(upload)
    location = url_for("api.read_job", job_id=job.id)
    return jsonify(one_job(job)), 201, {"Location": location}


@bp.get("/jobs")
def list_jobs() -> Response:
    """Newest first. Query: status (one of the contract's), q (name contains), owner (a name, or `me`), limit
    (1-500), offset."""
    query = job_search()
    limit = query_int("limit", 50, 1, 500)
    offset = query_int("offset", 0, 0, 10**9)
    total = db.session.execute(select(func.count()).select_from(query.order_by(None).subquery())).scalar_one()
    jobs = db.session.scalars(query.limit(limit).offset(offset)).all()
    return jsonify({"jobs": jobs_json(db.session, jobs), "total": total, "limit": limit, "offset": offset})


@bp.get("/jobs/<job_id>")
def read_job(job_id: str) -> Response:
    return jsonify(one_job(get_job(job_id)))


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> tuple[Response, int]:
    """202; the job is CANCELING until no chunk renders (Blender is killed within seconds), then CANCELED."""
    job = get_job(job_id)
    actions.cancel(job)
    return jsonify(one_job(job)), 202


@bp.delete("/jobs/<job_id>")
def delete_job(job_id: str) -> tuple[str, int]:
    """204; an active job is canceled first. The job and its URLs are gone at once (404); its files, the project
    files no other job uses and its rows go now, or once its cancel has settled. One event records who deleted it."""
    actions.delete(get_job(job_id))
    return "", 204


@bp.post("/jobs/<job_id>/retry")
def retry_job(job_id: str) -> tuple[Response, int]:
    """202; re-renders only the frames that are not done, then packages again."""
    job = get_job(job_id)
    actions.retry(job)
    return jsonify(one_job(job)), 202


@bp.get("/jobs/<job_id>/frames")
def list_frames(job_id: str) -> Response:
    """In order, a page at a time: `limit` frames (1 to FRAMES_PAGE, default FRAMES_PAGE: every frame of a job that
    size, as before pages) from the `offset`th. A page is a range of frame numbers read from the (job, frame) index:
    as quick at the millionth frame as at the first. A frame has a row once its chunk was claimed; one without is
    QUEUED, as its row would say (a chunk canceled or failed before a worker claimed it left its frames QUEUED too)."""
    job = get_job(job_id)
    limit = query_int("limit", FRAMES_PAGE, 1, FRAMES_PAGE)
    offset = query_int("offset", 0, 0, 10**9)
    first = job.frame_start + offset
    numbers = range(first, min(first + limit, job.frame_end + 1))
    rows = {
        row.frame: row
        for row in db.session.execute(
            select(*FRAME_COLUMNS).where(Frame.job_id == job.id, Frame.frame >= first, Frame.frame < first + limit)
        )
    }
    images = url_for("api.job_frame", job_id=job.id, frame=0, _external=True).removesuffix("/0")
    frames = [frame_json(rows[n], images) if n in rows else unclaimed_frame_json(n) for n in numbers]
    return jsonify({"frames": frames, "total": job.frames_to_render, "limit": limit, "offset": offset})


def _serve(key: str, filename: str, mimetype: str, *, as_attachment: bool) -> Response:
    storage = services.storage()
    if isinstance(storage, FileStorage):
        return send_file(
            storage.local_path(key),
            mimetype=mimetype,
            as_attachment=as_attachment,
            download_name=filename,
            max_age=3600,
        )
    url = storage.download_url(key, filename if as_attachment else None)
    assert url is not None
    return redirect(url, code=302)


def done_frame(job: Job, frame: int) -> Frame:
    row = db.session.scalars(select(Frame).where(Frame.job_id == job.id, Frame.frame == frame)).one_or_none()
    if row is None and job.frame_start <= frame <= job.frame_end:  # its chunk was not claimed yet
        raise Conflict(f"frame {frame} is {FrameStatus.QUEUED}, not rendered yet")
    if row is None:
        raise NotFound(f"frame {frame} of job {job.id}")
    if row.status != FrameStatus.DONE or not row.image_key:
        raise Conflict(f"frame {frame} is {row.status}, not rendered yet")
    return row


@bp.get("/jobs/<job_id>/frames/<int:frame>")
def job_frame(job_id: str, frame: int) -> Response:
    job = get_job(job_id)
    row = done_frame(job, frame)
    ext = planning.EXTENSIONS[job.output_format]
    name = planning.frame_filename(frame, ext, job.frame_end)
    return _serve(row.image_key or "", name, planning.CONTENT_TYPES[ext], as_attachment=False)


@bp.get("/jobs/<job_id>/frames/<int:frame>/thumbnail")
def frame_thumbnail(job_id: str, frame: int) -> Response:
    """A small JPEG of the frame (made by the worker that rendered it); 404 for OpenEXR jobs, which have none."""
    job = get_job(job_id)
    row = done_frame(job, frame)
    key = thumbnail_key(row.image_key or "")
    storage = services.storage()
    if job.output_format not in PREVIEWABLE or (isinstance(storage, FileStorage) and not storage.exists(key)):
        raise NotFound(f"a thumbnail of frame {frame}")
    name = planning.frame_filename(frame, "jpg", job.frame_end)
    return _serve(key, name, THUMBNAIL_TYPE, as_attachment=False)


@bp.get("/jobs/<job_id>/asset")
def job_asset(job_id: str) -> Response:
    job = get_job(job_id)
    if not job.asset_key or not job.asset_filename:
        raise Conflict(f"the job is {job.status}; its zip is not ready")
    return _serve(job.asset_key, job.asset_filename, "application/zip", as_attachment=True)


@bp.get("/jobs/<job_id>/movie")
def job_movie(job_id: str) -> Response:
    """The preview movie (H.264 MP4), inline so a `<video>` plays it; seekable (Range) from either storage."""
    job = get_job(job_id)
    if not job.movie_key or not job.movie_filename:
        raise NotFound(f"a movie of job {job.id} (none for one frame, preview_movie=0, or not packaged yet)")
    return _serve(job.movie_key, job.movie_filename, "video/mp4", as_attachment=False)


@bp.get("/jobs/<job_id>/chunks")
def list_chunks(job_id: str) -> Response:
    """By index, a page at a time: `limit` chunks (1 to CHUNKS_PAGE, default CHUNKS_PAGE: every chunk of a job that
    size) from the `offset`th, of those in `status` (comma-separated) if given, and `total` such chunks. A job may
    have 10,000 chunks; a page is read from the (job, index) index and `total` from the (job, status) one."""
    job = get_job(job_id)
    limit = query_int("limit", CHUNKS_PAGE, 1, CHUNKS_PAGE)
    offset = query_int("offset", 0, 0, 10**9)
    wanted = query_statuses(ChunkStatus)
    where = [Chunk.job_id == job.id, *([Chunk.status.in_(wanted)] if wanted else [])]
    total = db.session.scalar(select(func.count()).select_from(Chunk).where(*where))
    chunks = db.session.scalars(select(Chunk).where(*where).order_by(Chunk.index).limit(limit).offset(offset))
    return jsonify({"chunks": [chunk_json(c) for c in chunks], "total": total, "limit": limit, "offset": offset})


@bp.get("/jobs/<job_id>/chunks/<int:index>/log")
def chunk_log(job_id: str, index: int) -> Response:
    """The chunk's Blender log (stdout and stderr), a few seconds behind while it renders."""
    job = get_job(job_id)
    chunk = db.session.scalars(select(Chunk).where(Chunk.job_id == job.id, Chunk.index == index)).one_or_none()
    if chunk is None:
        raise NotFound(f"chunk {index} of job {job_id}")
    if not chunk.log_key:
        raise Conflict(f"chunk {index} has not started, so it has no log yet")
    try:
        text = services.storage().read_bytes(chunk.log_key)
    except FileNotFoundError:
        text = b""
    return Response(text, mimetype="text/plain", headers={"X-Content-Type-Options": "nosniff"})


@bp.get("/jobs/<job_id>/events")
def job_events(job_id: str) -> Response:
    """The audit trail: every status change of the job, its chunks and frames, oldest first. With
    `Accept: text/event-stream` instead: the job's live Server-Sent Events stream (see `webapp.live`)."""
    job = get_job(job_id)
    if live.wants_stream():
        return live.stream(job.id)
    limit = query_int("limit", 1000, 1, 100_000)
    after = query_int("after", 0, 0, DB_INT_MAX)
    events = db.session.scalars(
        select(Event).where(Event.job_id == job.id, Event.id > after).order_by(Event.id).limit(limit)
    )
    return jsonify({"events": [event_json(e) for e in events]})
