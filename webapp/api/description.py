"""The OpenAPI 3.1 description of the JSON API: the one place a route is described, served as `/api/openapi.json`
and rendered as the `/api/docs` page.

To describe a new route, add its path (as Flask spells it under /api, with `{name}` for `<name>`) and method to
`PATHS` below, with `operation(...)`; shapes it shares go in `SCHEMAS`. tests/integration/test_openapi.py fails while
a Flask route under /api is missing here (or one described here does not exist), and tests/e2e/test_schemathesis.py
checks what every route answers against what is written here. Choices and limits are read from the code and the
running settings, so the description cannot drift from what the farm accepts.
"""

from __future__ import annotations

from typing import Any

from farm import users
from farm.config import Settings
from farm.jobs.inputs import CONTROL
from farm.jobs.submission import DEVICES, ENGINES, MAX_RESOLUTION, OUTPUT_FORMATS
from farm.models import ChunkStatus, FrameStatus, JobStatus, Role, WorkerStatus
from farm.projects import MAX_FILES
from webapp.api.files import MAX_CHECK
from webapp.api.jobs import CHUNKS_PAGE, FRAMES_PAGE
from webapp.api.monitor import TASK_STATES

Schema = dict[str, Any]

TEXT = {"type": "string", "pattern": f"^[^{CONTROL.pattern[1:-1]}]*$"}  # any text the guards let through (no C0/C1)
JOB_ID = {"type": "string", "format": "uuid", "description": "The job's id."}
SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "64 lowercase hex digits."}
FRAME_NUMBER = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {**schema, "type": [schema["type"], "null"]}


def obj(properties: dict[str, Schema], required: tuple[str, ...] | None = None) -> Schema:
    """An object with these properties, all required unless `required` names fewer; more may come (a superset)."""
    return {"type": "object", "properties": properties, "required": list(properties if required is None else required)}


def list_of(key: str, item: Schema, **paging: Schema) -> Schema:
    return obj({key: {"type": "array", "items": item}, **paging})


STRING, INTEGER, NUMBER, BOOLEAN = ({"type": t} for t in ("string", "integer", "number", "boolean"))
BINARY = {"type": "string", "format": "binary"}
JOB = obj({"job": ref("Job")})
USER = obj({"user": ref("User")})
TIME = {"type": ["string", "null"], "format": "date-time"}
PAGING = {"total": INTEGER, "limit": INTEGER, "offset": INTEGER}

SCHEMAS: dict[str, Schema] = {
    "Error": obj(
        {
            "error": obj(
                {
                    "code": {**STRING, "description": "snake_case, for programs: `not_found`, `too_large`, …"},
                    "message": {**STRING, "description": "For people: what went wrong and what to do."},
                    "field": {**nullable(STRING), "description": "The form field, query parameter or path part."},
                }
            )
        }
    ),
    "Job": obj(
        {
            "id": STRING,
            "name": STRING,
            "status": {"type": "string", "enum": list(JobStatus)},
            "worker_host": {**nullable(STRING), "description": "The host of the most recent chunk."},
            "created_at": TIME,
            "updated_at": TIME,
            "finished_at": TIME,
            "owner": nullable(STRING),
            "error": nullable(STRING),
            "warnings": {"type": "array", "items": obj({"code": STRING, "message": STRING, "path": STRING})},
            "render": obj(
                {
                    "frame_start": INTEGER,
                    "frame_end": INTEGER,
                    "frames_to_render": INTEGER,
                    "frames_rendered": INTEGER,
                    "latest_frame_rendered": nullable(INTEGER),
                    "average_render_time": {**nullable(NUMBER), "description": "Milliseconds per frame."},
                    "eta_seconds": nullable(NUMBER),
                    "chunks_rendering": INTEGER,
                    "progress": {"type": "number", "minimum": 0, "maximum": 100},
                },
                ("frame_start", "frame_end", "frames_to_render", "frames_rendered", "latest_frame_rendered"),
            ),
            "settings": obj(
                {
                    "chunk_size": INTEGER,
                    "engine": nullable(STRING),
                    "samples": nullable(INTEGER),
                    "resolution_x": nullable(INTEGER),
                    "resolution_y": nullable(INTEGER),
                    "resolution_percentage": nullable(INTEGER),
                    "output_format": {"type": "string", "enum": list(OUTPUT_FORMATS)},
                    "device": {"type": "string", "enum": list(DEVICES)},
                    "priority": {"type": "integer", "minimum": 0, "maximum": 9},
                    "preview_movie": BOOLEAN,
                }
            ),
            "source": obj({"kind": STRING, "main": nullable(STRING), "scene": {}, "blender": {}}),
            "asset": {
                "oneOf": [obj({"filename": STRING, "url": STRING, "size": nullable(INTEGER)}), {"type": "null"}],
                "description": "The zip, null until it is stored; `url` is the API's, which redirects to the file.",
            },
            "webhooks": {
                "type": "array",
                "items": obj(
                    {
                        "id": INTEGER,
                        "target": STRING,
                        "url": {**STRING, "description": "The receiver's origin only."},
                        "event": STRING,
                        "status": STRING,
                        "created_at": TIME,
                        "delivered_at": TIME,
                        "next_attempt_at": TIME,
                        "attempts": {"type": "array", "items": {"type": "object"}},
                    }
                ),
                "description": "Every delivery of the job's end to a webhook, with each attempt.",
            },
            "storage": {
                **obj({"bytes": nullable(INTEGER), "measured_at": TIME}),
                "description": "The job's files in storage, as the janitor last measured them (null: not yet).",
            },
            "split": {
                "type": "integer",
                "minimum": 1,
                "maximum": 64,
                "description": "Parts the still is rendered in by several workers and merged; 1: not split.",
            },
            "movie": {"oneOf": [obj({"filename": STRING, "url": STRING, "size": nullable(INTEGER)}), {"type": "null"}]},
            "preview": BOOLEAN,
            "version": INTEGER,
        },
        ("id", "name", "status", "worker_host", "created_at", "owner", "warnings", "render", "asset", "movie", "split"),
    ),
    "User": obj(
        {"name": STRING, "role": {"type": "string", "enum": list(Role)}, "disabled": BOOLEAN, "created_at": TIME}
    ),
    "Token": obj(
        {
            "id": INTEGER,
            "prefix": {**STRING, "description": "The token's first characters, to recognise a leaked one."},
            "name": STRING,
            "user": STRING,
            "created_at": TIME,
            "last_used_at": TIME,
            "revoked_at": TIME,
            "token": {**STRING, "description": "Only in the answer that created it."},
        },
        ("id", "prefix", "name", "user", "created_at", "last_used_at", "revoked_at"),
    ),
    "Frame": obj(
        {
            "frame": INTEGER,
            "status": {"type": "string", "enum": list(FrameStatus)},
            "render_time": {**nullable(NUMBER), "description": "Milliseconds."},
            "worker": nullable(STRING),
            "device": nullable(STRING),
            "sha256": nullable(STRING),
            "url": {**nullable(STRING), "description": "The image, once the frame is DONE."},
        }
    ),
    "Chunk": obj(
        {
            "index": INTEGER,
            "frame_start": INTEGER,
            "frame_end": INTEGER,
            "status": {"type": "string", "enum": list(ChunkStatus)},
            "attempts": INTEGER,
            "worker": nullable(STRING),
            "started_at": TIME,
            "finished_at": TIME,
            "error": nullable(STRING),
            "log_url": nullable(STRING),
            "progress": {"type": "number", "minimum": 0, "maximum": 100, "description": "Inside its frames too."},
        },
        ("index", "frame_start", "frame_end", "status", "attempts", "worker", "started_at", "finished_at", "error"),
    ),
    "Event": obj(
        {
            "id": INTEGER,
            "at": TIME,
            "kind": {"type": "string", "enum": ["job", "chunk", "frame", "worker"]},
            "subject": STRING,
            "from": nullable(STRING),
            "to": STRING,
            "reason": nullable(STRING),
            "actor": nullable(STRING),
        }
    ),
    "Worker": obj(
        {
            "hostname": STRING,
            "status": {"type": "string", "enum": list(WorkerStatus)},
            "devices": {"type": "array", "items": STRING},
            "queues": {"type": "array", "items": STRING},
            "last_heartbeat": TIME,
            "clock_offset": {**nullable(NUMBER), "description": "Seconds the database's clock is ahead of its own."},
            "clock_warning": BOOLEAN,
            "health": {**nullable(STRING), "description": "Why the worker is unwell; null when well."},
            "memory_bytes": nullable(INTEGER),
            "started_at": TIME,
            "current": {
                "oneOf": [
                    obj({"job_id": STRING, "chunk": INTEGER, "frame_start": INTEGER, "frame_end": INTEGER}),
                    {"type": "null"},
                ]
            },
            "frames_rendered": INTEGER,
            "average_render_time": {**nullable(NUMBER), "description": "Milliseconds per frame."},
        },
        ("hostname", "status", "devices", "last_heartbeat", "current", "frames_rendered", "average_render_time"),
    ),
    "Task": obj(
        {
            "id": STRING,
            "name": STRING,
            "state": STRING,
            "worker": nullable(STRING),
            "queue": nullable(STRING),
            "job_id": nullable(STRING),
            "chunk_id": nullable(INTEGER),
            "args": nullable(STRING),
            "retries": INTEGER,
            "received_at": TIME,
            "started_at": TIME,
            "finished_at": TIME,
            "runtime": {**nullable(NUMBER), "description": "Milliseconds."},
            "result": nullable(STRING),
        }
    ),
    "Blob": obj({"sha256": SHA256, "size": {"type": "integer", "minimum": 0}}),
}

ERRORS = {
    400: "Bad input; `field` names the part at fault.",
    401: "No token, or a bad one (`unauthenticated`).",
    403: "This user's role or ownership does not allow it (`forbidden`).",
    404: "No such object, or no such route (`not_found`).",
    409: "The object is in the wrong state for this (`wrong_state`).",
    413: "The upload is larger than the farm takes (`too_large`).",
    414: "The URL is longer than the farm reads (`uri_too_long`).",
    422: "Well formed, but the farm cannot do it as asked.",
    503: "Busy for now; retry after the `Retry-After` header's seconds.",
    507: "The web host's disk is too full to take the upload; retry later.",
}
EVERY_ROUTE = (400, 401, 403, 404, 414)  # guards, auth and routing answer these anywhere under /api


def error_response(status: int | str) -> Schema:
    text = ERRORS.get(status, "Any other refusal, in the same shape.") if isinstance(status, int) else "Other errors."
    return {"description": text, "content": {"application/json": {"schema": ref("Error")}}}


def json_response(description: str, schema: Schema, headers: dict[str, Schema] | None = None) -> Schema:
    answer: Schema = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        answer["headers"] = headers
    return answer


def file_response(description: str, media_types: tuple[str, ...]) -> dict[str, Schema]:
    """A file served by the web app (file:// storage) or, with S3, a 302 to a presigned URL for it."""
    return {
        "200": {
            "description": description,
            "content": {m: {"schema": BINARY} for m in media_types},
        },
        "302": {
            "description": "With S3 storage: a redirect to a short-lived presigned URL of the file.",
            "headers": {"Location": {"schema": STRING, "required": True}},
        },
    }


def path_parameter(name: str, schema: Schema) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def json_body(schema: Schema, *, required: bool = True) -> Schema:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def query(name: str, schema: Schema, description: str, **more: Any) -> Schema:
    """An optional query parameter; sent blank (`?limit=`) it counts as not sent, as a form's empty field does."""
    return {
        "name": name,
        "in": "query",
        "required": False,
        "allowEmptyValue": True,
        "schema": schema,
        "description": description,
        **more,
    }


def comma_list(name: str, choices: list[str], description: str) -> Schema:
    """A query parameter holding several choices, comma-separated (`status=FAILED,CANCELED`)."""
    schema = {"type": "array", "items": {"type": "string", "enum": choices}}
    return query(name, schema, description, style="form", explode=False)


def paging(default_limit: int, max_limit: int) -> list[Schema]:
    return [
        query("limit", {"type": "integer", "minimum": 1, "maximum": max_limit, "default": default_limit}, "Page size."),
        query("offset", {"type": "integer", "minimum": 0, "maximum": 10**9, "default": 0}, "Rows to skip."),
    ]


def operation(
    name: str,
    tag: str,
    summary: str,
    responses: dict[str, Schema],
    *,
    description: str = "",
    parameters: list[Schema] | None = None,
    body: Schema | None = None,
    errors: tuple[int, ...] = (),
    public: bool = False,
) -> Schema:
    """One method of one path. `name` is the Flask view's name (its operationId); `errors` are the statuses this
    route answers besides those every route may (bad characters, auth, unknown ids, over-long URLs)."""
    skipped = {401, 403} if public else set()
    described: Schema = {"operationId": name, "tags": [tag], "summary": summary}
    if description:
        described["description"] = description
    if parameters:
        described["parameters"] = parameters
    if body:
        described["requestBody"] = body
    described["responses"] = {
        **responses,
        **{str(status): error_response(status) for status in sorted({*EVERY_ROUTE, *errors} - skipped)},
        "4XX": error_response("4XX"),
    }
    if public:
        described["security"] = []
    return described


def job_form(settings: Settings) -> Schema:
    """`POST /api/jobs`'s multipart form, with the limits this farm is configured with."""

    def whole(lo: int, hi: int, text: str) -> Schema:
        return {"type": "integer", "minimum": lo, "maximum": hi, "description": text}

    def choice(choices: tuple[str, ...] | list[str], text: str) -> Schema:
        return {"type": "string", "enum": list(choices), "description": text}

    fields = {
        "file": {
            "type": "string",
            "format": "binary",
            "description": "A .blend file, or a .zip project archive (then `main` names the .blend inside it). "
            f"At most {settings.max_upload_bytes // 2**20:,} MiB. Required unless `manifest` is sent.",
        },
        "manifest": {
            **TEXT,
            "contentMediaType": "application/json",
            "description": 'Instead of `file`: `{"main": path, "files": {path: {"sha256", "size"}}}` naming files '
            f"already uploaded with `PUT /api/files/{{sha256}}` (at most {MAX_FILES:,}).",
        },
        "main": {**TEXT, "maxLength": 500, "description": "The .blend inside a .zip project."},
        "name": {**TEXT, "maxLength": 200, "description": "Default: the file's stem."},
        "frame_start": whole(0, 10**9, "First frame (inclusive); default: the scene's own."),
        "frame_end": whole(0, 10**9, f"Last frame (inclusive); at most {settings.max_frames:,} frames a job."),
        "chunk_size": whole(1, settings.max_frames, "Frames per task; default: chosen by the farm."),
        "engine": choice(list(dict.fromkeys(ENGINES.values())), "Default: the scene's own."),
        "samples": whole(1, settings.max_samples, "Default: the scene's own."),
        "resolution_x": whole(4, MAX_RESOLUTION, "Default: the scene's own."),
        "resolution_y": whole(4, MAX_RESOLUTION, "Default: the scene's own."),
        "resolution_percentage": whole(1, 100, f"At most {settings.max_pixels / 1e6:g} megapixels a frame."),
        "output_format": choice(OUTPUT_FORMATS, "Default: PNG."),
        "device": choice(DEVICES, "Default: AUTO (GPU 409s while no online worker has one)."),
        "priority": whole(0, 9, "Higher renders first; default 0."),
        "strict": choice(["0", "1"], "1: refuse (422 `missing_files`) when a file the scene uses is missing."),
        "preview": choice(["0", "1"], "1: a quick look: 25 % size, few samples, on the preview queue served first."),
        "preview_movie": choice(["0", "1"], "0: no preview movie (made for jobs of two frames or more)."),
        "split": whole(
            2,
            64,
            "One still rendered by this many workers and merged (Cycles: by samples, at least one each; other "
            "engines: by bands of rows); only for a one-frame range, not with `preview` (422 `split` otherwise).",
        ),
        "notify_url": {
            **TEXT,
            "maxLength": 2000,
            "description": "Webhook: POSTed the job's end, signed; loopback and private addresses are refused.",
        },
    }
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": fields,
                    "anyOf": [{"required": ["file"]}, {"required": ["manifest"]}],
                }
            }
        },
    }


def paths(settings: Settings) -> dict[str, dict[str, Schema]]:
    """Every route under /api, as Flask spells it, by method."""
    job = [path_parameter("job_id", JOB_ID)]
    frame = [*job, path_parameter("frame", FRAME_NUMBER)]
    worker = [path_parameter("hostname", {**TEXT, "maxLength": 200})]
    one_job = json_response("The job.", JOB)
    events = list_of("events", ref("Event"))
    return {
        "/api/jobs": {
            "get": operation(
                "list_jobs",
                "jobs",
                "List and search jobs, newest first",
                {"200": json_response("A page of jobs.", list_of("jobs", ref("Job"), **PAGING))},
                parameters=[
                    comma_list("status", list(JobStatus), "Only jobs in these states (comma-separated)."),
                    query("q", {**TEXT, "maxLength": 1000}, "Name contains this, or the job's id is it."),
                    *paging(50, 500),
                ],
            ),
            "post": operation(
                "submit_job",
                "jobs",
                "Submit a job",
                {
                    "201": json_response(
                        "The job, queued.",
                        JOB,
                        {"Location": {"schema": STRING, "required": True, "description": "The job's URL."}},
                    )
                },
                description="Upload a .blend (or a .zip project with `main`), or name uploaded files in "
                "`manifest`, with the render settings. Empty fields take the scene's own values.",
                body=job_form(settings),
                errors=(409, 413, 422, 429, 503, 507),
            ),
        },
        "/api/jobs/{job_id}": {
            "get": operation("read_job", "jobs", "One job", {"200": one_job}, parameters=job),
            "delete": operation(
                "delete_job",
                "jobs",
                "Delete a job",
                {"204": {"description": "Gone: the job, its files and its URLs answer 404 from now on."}},
                description="An active job is canceled first; its files and rows go once the cancel has settled. "
                "One event records who deleted it.",
                parameters=job,
            ),
        },
        "/api/jobs/{job_id}/cancel": {
            "post": operation(
                "cancel_job",
                "jobs",
                "Cancel a job",
                {"202": json_response("The job, CANCELING until no chunk renders, then CANCELED.", JOB)},
                parameters=job,
                errors=(409,),
            ),
        },
        "/api/jobs/{job_id}/retry": {
            "post": operation(
                "retry_job",
                "jobs",
                "Retry a FAILED or CANCELED job",
                {"202": json_response("The job, queued again: only frames that did not finish.", JOB)},
                parameters=job,
                errors=(409,),
            ),
        },
        "/api/jobs/{job_id}/frames": {
            "get": operation(
                "list_frames",
                "frames",
                "A job's frames",
                {"200": json_response("A page of frames, in order.", list_of("frames", ref("Frame"), **PAGING))},
                description=f"Every frame of a job of up to {FRAMES_PAGE:,} frames; larger jobs a page at a time "
                "(`offset` counts frames from the job's first).",
                parameters=[*job, *paging(FRAMES_PAGE, FRAMES_PAGE)],
            ),
        },
        "/api/jobs/{job_id}/frames/{frame}": {
            "get": operation(
                "job_frame",
                "frames",
                "One rendered frame's image",
                file_response("The image.", ("image/png", "image/jpeg", "image/x-exr")),
                parameters=frame,
                errors=(409,),
            ),
        },
        "/api/jobs/{job_id}/frames/{frame}/thumbnail": {
            "get": operation(
                "frame_thumbnail",
                "frames",
                "A small JPEG of a rendered frame",
                file_response("The thumbnail (none for OpenEXR jobs: 404).", ("image/jpeg",)),
                parameters=frame,
                errors=(409,),
            ),
        },
        "/api/jobs/{job_id}/asset": {
            "get": operation(
                "job_asset",
                "jobs",
                "The job's zip of frames",
                file_response("The zip: one image per frame and a manifest.json.", ("application/zip",)),
                parameters=job,
                errors=(409,),
            ),
        },
        "/api/jobs/{job_id}/movie": {
            "get": operation(
                "job_movie",
                "jobs",
                "The job's preview movie (H.264 MP4)",
                file_response("The movie, inline so a <video> plays it; seekable.", ("video/mp4",)),
                description="404 while the job has no movie (not packaged yet, one frame, or `preview_movie=0`).",
                parameters=job,
            ),
        },
        "/api/jobs/{job_id}/chunks": {
            "get": operation(
                "list_chunks",
                "jobs",
                "A job's chunks (its Celery tasks)",
                {"200": json_response("A page of chunks, by index.", list_of("chunks", ref("Chunk"), **PAGING))},
                description=f"Every chunk of a job of up to {CHUNKS_PAGE:,} chunks; larger jobs a page at a time "
                "(`total` counts the chunks in `status`, or all of them).",
                parameters=[
                    *job,
                    *paging(CHUNKS_PAGE, CHUNKS_PAGE),
                    comma_list("status", list(ChunkStatus), "Only chunks in these states (comma-separated)."),
                ],
            ),
        },
        "/api/jobs/{job_id}/chunks/{index}/log": {
            "get": operation(
                "chunk_log",
                "jobs",
                "A chunk's Blender log",
                {"200": {"description": "stdout and stderr, a few seconds behind.", "content": {"text/plain": {}}}},
                parameters=[*job, path_parameter("index", FRAME_NUMBER)],
                errors=(409,),
            ),
        },
        "/api/jobs/{job_id}/events": {
            "get": operation(
                "job_events",
                "jobs",
                "A job's audit trail, or its live stream",
                {
                    "200": {
                        "description": "Every status change, oldest first. With `Accept: text/event-stream`: the "
                        "live Server-Sent Events stream (`snapshot`, then `update`s, `end` when the job ends).",
                        "content": {"application/json": {"schema": events}},
                    }
                },
                parameters=[
                    *job,
                    query("after", {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}, "Events after this id."),
                    query("limit", {"type": "integer", "minimum": 1, "maximum": 100_000, "default": 1000}, "Most."),
                ],
                errors=(503,),
            ),
        },
        "/api/storage": {
            "get": operation(
                "storage_used",
                "monitor",
                "The farm's storage used",
                {
                    "200": json_response(
                        "Jobs' files as last measured, and the project files stored once for all jobs.",
                        obj(
                            {
                                "total_bytes": INTEGER,
                                "jobs_bytes": INTEGER,
                                "jobs": INTEGER,
                                "project_files_bytes": INTEGER,
                                "project_files": INTEGER,
                            },
                            ("total_bytes", "jobs_bytes", "jobs", "project_files_bytes", "project_files"),
                        ),
                    )
                },
            ),
        },
        "/api/workers": {
            "get": operation(
                "list_workers",
                "workers",
                "Workers, their devices and what each renders",
                {"200": json_response("Every worker the farm has seen.", list_of("workers", ref("Worker")))},
            ),
        },
        **{
            f"/api/workers/{{hostname}}/{action}": {
                "post": operation(
                    f"{action}_worker",
                    "workers",
                    summary,
                    {"202": json_response("The worker.", obj({"worker": ref("Worker")}))},
                    parameters=worker,
                    errors=(409,),
                )
            }
            for action, summary in (
                ("disable", "Disable a worker: it finishes its chunk and takes no more"),
                ("enable", "Enable a disabled worker"),
            )
        },
        "/api/workers/{hostname}/events": {
            "get": operation(
                "worker_events",
                "workers",
                "A worker's trail (registered, disabled, offline, back)",
                {"200": json_response("The latest 500 events, oldest first.", events)},
                parameters=worker,
            ),
        },
        "/api/queues": {
            "get": operation(
                "list_queues",
                "monitor",
                "Broker queues and their lengths",
                {
                    "200": json_response(
                        "Messages waiting for a worker, and (Redis) taken but not acknowledged.",
                        list_of("queues", obj({"name": STRING, "waiting": INTEGER, "unacked": INTEGER})),
                    )
                },
            ),
        },
        "/api/tasks": {
            "get": operation(
                "list_tasks",
                "monitor",
                "Recent Celery tasks, newest change first",
                {"200": json_response("A page of tasks.", list_of("tasks", ref("Task"), **PAGING))},
                parameters=[
                    comma_list("state", list(TASK_STATES), "Only tasks in these states (comma-separated)."),
                    query("worker", {**TEXT, "maxLength": 200}, "Only this worker's tasks."),
                    query("job", {**TEXT, "maxLength": 36}, "Only this job's tasks."),
                    *paging(50, 500),
                ],
            ),
        },
        "/api/files/check": {
            "post": operation(
                "check_files",
                "files",
                "Which project files the farm lacks",
                {"200": json_response("The files to upload.", list_of("missing", ref("Blob")))},
                body={
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": obj({"files": {"type": "array", "items": ref("Blob"), "maxItems": MAX_CHECK}})
                        }
                    },
                },
            ),
        },
        "/api/files/{sha256}": {
            "put": operation(
                "put_file",
                "files",
                "Upload one project file by its sha256",
                {
                    "201": json_response("Stored.", obj({"sha256": SHA256, "stored": BOOLEAN})),
                    "200": json_response("The farm had it already.", obj({"sha256": SHA256, "stored": BOOLEAN})),
                },
                description="The raw bytes; a body whose sha256 differs from the URL's is refused "
                "(422 `checksum_mismatch`).",
                parameters=[path_parameter("sha256", SHA256)],
                body={"required": True, "content": {"application/octet-stream": {"schema": BINARY}}},
                errors=(413, 422, 507),
            ),
        },
        "/api/me": {
            "get": operation("me", "users", "Who this token or session is", {"200": json_response("You.", USER)}),
        },
        "/api/users": {
            "get": operation(
                "list_users",
                "users",
                "Every user (admins)",
                {"200": json_response("Users.", list_of("users", ref("User")))},
            ),
            "post": operation(
                "create_user",
                "users",
                "Create a user (admins)",
                {"201": json_response("The user.", USER)},
                body=json_body(
                    obj(
                        {
                            "name": {"type": "string", "pattern": f"^{users.NAME.pattern}$"},
                            "role": {"type": "string", "enum": list(Role)},
                            "password": {**TEXT, "minLength": users.MIN_PASSWORD, "maxLength": 1000},
                        },
                        ("name", "role"),
                    )
                ),
                errors=(409,),
            ),
        },
        "/api/tokens": {
            "get": operation(
                "list_tokens",
                "users",
                "Your API tokens (an admin may name another user)",
                {"200": json_response("Tokens, never the secret itself.", list_of("tokens", ref("Token")))},
                parameters=[query("user", {**TEXT, "maxLength": 64}, "Another user's name (admins).")],
            ),
            "post": operation(
                "create_token",
                "users",
                "Create an API token for yourself",
                {"201": json_response("The token: the only time it is sent.", {**ref("Token"), "required": ["token"]})},
                body=json_body(obj({"name": {**TEXT, "maxLength": 100}}, ()), required=False),
            ),
        },
        "/api/tokens/revoke": {
            "post": operation(
                "revoke_token",
                "users",
                "Revoke a token (yours; anyone's for an admin)",
                {"200": json_response("The token, revoked.", obj({"token": ref("Token")}))},
                body=json_body(
                    {
                        **obj({"token": {**TEXT, "minLength": 1, "maxLength": 200}, "id": INTEGER}, ()),
                        "anyOf": [{"required": ["token"]}, {"required": ["id"]}],
                    }
                ),
            ),
        },
        "/api/health": {
            "get": operation(
                "health",
                "meta",
                "Liveness: the app and its database answer",
                {"200": json_response("Alive.", obj({"status": {"type": "string", "const": "ok"}}))},
                public=True,
            ),
        },
        "/api/openapi.json": {
            "get": operation(
                "openapi",
                "meta",
                "This description, OpenAPI 3.1",
                {"200": json_response("The description.", {"type": "object"})},
            ),
        },
        "/api/docs": {
            "get": operation(
                "docs",
                "meta",
                "This description as a page for people",
                {"200": {"description": "HTML.", "content": {"text/html": {"schema": STRING}}}},
            ),
        },
    }


# Every operation but the public one (health) needs a user (the contract's "Users and tokens").
REQUIRED_AUTH: list[Schema] = [{"bearer": []}]


def describe(settings: Settings) -> Schema:
    """The whole description, with this farm's limits."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "farm",
            "version": "1",
            "description": "A render farm for Blender. Every answer is JSON; every error is "
            '`{"error": {"code", "message", "field"}}` with a 4xx status, never a stack trace or HTML.',
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "jobs", "description": "Submit, follow, cancel, retry and download renders."},
            {"name": "frames", "description": "A job's frames and their images."},
            {"name": "files", "description": "Content-addressed project files, uploaded once."},
            {"name": "workers", "description": "The machines that render."},
            {"name": "monitor", "description": "The broker's queues and Celery's task history."},
            {"name": "users", "description": "Who you are, your API tokens, and (admins) users."},
            {"name": "meta", "description": "Health and this description."},
        ],
        "paths": paths(settings),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "An API token."}},
        },
        "security": REQUIRED_AUTH,
    }
