"""Server-rendered pages for people: jobs, the New job form, a job's live page and the workers monitor. They read
the same rows, and act through the same functions, as the JSON API; forms are CSRF-protected (`webapp.csrf`).

Lists that refresh themselves (jobs, the monitor) fetch their own page with `?partial=1` and swap the fragment in,
so one template renders a table both times.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import false, func, select

from farm.errors import FarmError, Forbidden, ValidationError
from farm.jobs import staging, submission
from farm.jobs.storage_usage import farm_usage
from farm.jobs.submission import DEVICES, OUTPUT_FORMATS, parse_form, save_upload
from farm.models import Chunk, Job, JobStatus, Role, WorkerStatus
from webapp import actions, auth, csrf, services
from webapp.api.monitor import TASK_STATES, queues_json, task_filters, tasks_json
from webapp.api.serializers import jobs_json, workers_json
from webapp.errors import ErrorAnswer, farm_error_response
from webapp.extensions import db
from webapp.limits import SUBMIT_LIMIT
from webapp.live import SHOWN_CHUNKS, SHOWN_FRAMES, links
from webapp.queries import get_job, job_search, one_job, query_int

bp = Blueprint("pages", __name__)
bp.before_request(csrf.check)
PAGE_SIZE = 25
MAX_TILES = SHOWN_FRAMES  # frames drawn as tiles and bars on a job page; larger jobs show the first ones
FIRST_TILES = 60  # tiles in the HTML itself; the page's script adds the rest right after the first paint
ENGINES = tuple(dict.fromkeys(submission.ENGINES.values()))  # without the aliases the API also accepts


def _partial() -> bool:
    return request.args.get("partial") == "1"


@bp.get("/")
def jobs() -> str:
    """Newest first, searchable by name and filterable by status (the query of `GET /api/jobs`), 25 a page."""
    try:
        page = query_int("page", 1, 1, 10**6)
        query = job_search()
        error = None
    except ValidationError as exc:
        page = 1
        query, error = select(Job).where(false()), exc.message
    total = db.session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    found = db.session.scalars(query.limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)).all()
    context = {
        "jobs": jobs_json(db.session, found),
        "total": total,
        "page": page,
        "pages": max(1, math.ceil(total / PAGE_SIZE)),
        "statuses": list(JobStatus),
        "q": request.args.get("q", ""),
        "status": request.args.get("status", "").upper(),
        "owner": request.args.get("owner", "").strip(),
        "error": error,
    }
    return render_template("_jobs_table.html" if _partial() else "jobs.html", **context)


def _form_context(values: Any, errors: dict[str, str], staged: staging.Staged | None) -> dict[str, Any]:
    return {
        "values": values,
        "errors": errors,
        "staged": staged,
        "engines": ENGINES,
        "formats": OUTPUT_FORMATS,
        "devices": DEVICES,
        "max_upload_mb": services.settings().max_upload_bytes // 2**20,
    }


@bp.get("/jobs/new")
def new_job() -> str:
    auth.require(Role.ARTIST, "submitting jobs")
    return render_template("new_job.html", **_form_context({}, {}, None))


@bp.post("/jobs/new")
@SUBMIT_LIMIT
def create_job() -> Response | tuple[str, int, dict[str, str]]:
    """Submit the form: a new file, or the one staged when it was picked. A bad field re-renders the form with
    the error beside that field and everything the user typed, the file included."""
    settings = services.settings()
    staged = None
    try:
        file = request.files.get("file")
        if file is not None and file.filename:
            staged = staging.stage(settings, save_upload(file.stream, file.filename, settings))
        elif request.form.get("upload"):
            staged = staging.load(settings, request.form["upload"])
        else:
            raise ValidationError("file", "missing", "choose a .blend or .zip file to render")
        form = parse_form(request.form, settings)
        actions.authorize_submission(form)
        job = actions.submit_upload(staged.upload(settings), form)
    except FarmError as exc:
        db.session.rollback()
        errors = {exc.field or "file": exc.message}
        return render_template("new_job.html", **_form_context(request.form, errors, staged)), exc.status, exc.headers()
    staging.discard(settings, staged)
    kind = "Preview of" if job.preview else "Job"
    flash(f"{kind} {job.name} queued: frames {job.frame_start}–{job.frame_end}.", "ok")
    return redirect(url_for("pages.job_page", job_id=job.id), 303)


@bp.post("/jobs/new/upload")
def stage_upload() -> Response | ErrorAnswer:
    """The form's first step, sent by its script as soon as a file is picked: keep the file, and answer with the
    zip's .blend files and (for a .blend, or a zip holding one) the scene's own settings."""
    settings = services.settings()
    try:
        file = request.files.get("file")
        staged = staging.stage(
            settings, save_upload(file.stream if file else None, file.filename if file else None, settings)
        )
        main = request.form.get("main") or (staged.blend_files[0] if len(staged.blend_files) == 1 else None)
        scene = staging.scene(settings, staged, main) if staged.kind == "blend" or main else None
    except FarmError as exc:
        return farm_error_response(exc)
    return jsonify({"upload": staged.public(), "main": main, "scene": scene})


@bp.post("/jobs/new/scene")
def staged_scene() -> Response | ErrorAnswer:
    """The scene's own settings for the .blend chosen as `main` inside a staged zip."""
    settings = services.settings()
    try:
        staged = staging.load(settings, request.form.get("upload", ""))
        scene = staging.scene(settings, staged, request.form.get("main") or None)
    except FarmError as exc:
        return farm_error_response(exc)
    return jsonify({"scene": scene})


@bp.get("/jobs/<job_id>")
def job_page(job_id: str) -> str:
    """Rendered with the job itself (not its frames), so it paints at once; then its script follows the stream."""
    job = get_job(job_id)
    chunks = db.session.scalar(select(func.count()).select_from(Chunk).where(Chunk.job_id == job.id))
    return render_template(
        "job.html",
        job=one_job(job)["job"],
        links=links(job),
        chunks=chunks,
        shown_chunks=SHOWN_CHUNKS,
        max_tiles=MAX_TILES,
        first_tiles=FIRST_TILES,
        preview_ttl_hours=services.settings().preview_ttl_hours,
    )


def _act(action: Callable[[], Any], done: str, back: str) -> Response | ErrorAnswer:
    """Run a button's action; scripts get JSON (the error's JSON on failure), plain forms a redirect and a note."""
    try:
        action()
    except Forbidden:
        raise  # not a note on the page: the button was not shown, so the request was not the page's
    except FarmError as exc:
        db.session.rollback()
        if request.accept_mimetypes.best == "application/json":
            return farm_error_response(exc)
        flash(exc.message, "error")
        return redirect(back, 303)
    if request.accept_mimetypes.best == "application/json":
        return jsonify({"ok": True, "message": done})
    flash(done, "ok")
    return redirect(back, 303)


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> Response | ErrorAnswer:
    back = url_for("pages.job_page", job_id=job_id)
    return _act(lambda: actions.cancel(get_job(job_id)), "Canceling: Blender stops within seconds.", back)


@bp.post("/jobs/<job_id>/retry")
def retry_job(job_id: str) -> Response | ErrorAnswer:
    back = url_for("pages.job_page", job_id=job_id)
    return _act(lambda: actions.retry(get_job(job_id)), "Retrying the frames that did not finish.", back)


@bp.post("/jobs/<job_id>/delete")
def delete_job(job_id: str) -> Response | ErrorAnswer:
    job = get_job(job_id)
    return _act(lambda: actions.delete(job), f"Job {job.name} deleted.", url_for("pages.jobs"))


@bp.get("/workers")
def workers() -> str:
    """The monitor: workers, storage used, broker queues and recent tasks (filter by state), refreshed by the
    page's script."""
    try:
        filters, error = task_filters(), None
    except ValidationError as exc:
        filters, error = {"states": [], "worker": None, "job_id": None, "limit": 50, "offset": 0}, exc.message
    context = {
        "error": error,
        "workers": workers_json(db.session),
        "queues": queues_json(db.session),
        "tasks": tasks_json(db.session, **filters),
        "storage": farm_usage(db.session),
        "task_states": TASK_STATES,
        "state": ",".join(filters["states"]),
        "online": WorkerStatus.ONLINE,
    }
    return render_template("_monitor.html" if _partial() else "workers.html", **context)


@bp.post("/workers/<hostname>/<any(enable, disable):action>")
def toggle_worker(hostname: str, action: str) -> Response | ErrorAnswer:
    done = f"{hostname} {'takes work again' if action == 'enable' else 'finishes its chunk and takes no more work'}."
    return _act(lambda: actions.set_worker_enabled(hostname, action == "enable"), done, url_for("pages.workers"))


def init_app(app: Flask) -> None:
    """Static files are cached for a year under URLs that carry a hash of their content, so a page never waits on
    a revalidation round trip for its stylesheet and still sees a new one at once."""
    versions = {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        for path in Path(app.static_folder or "").iterdir()
        if path.is_file()
    }
    app.config["SEND_FILE_MAX_AGE_DEFAULT"] = 365 * 24 * 3600
    app.jinja_env.globals["static_url"] = lambda name: url_for("static", filename=name, v=versions.get(name))
    csrf.init_app(app)
    app.register_blueprint(bp)
