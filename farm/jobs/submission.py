"""Turn an upload and a form into a planned job: validate every field, store the source by hash, probe the scene,
create the job with one row per chunk and per frame (the frames made by the database itself, so planning a million
frames holds nothing per frame in this process). Nothing is dispatched here; that happens after commit.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import IO

from sqlalchemy import insert
from sqlalchemy.orm import Session

from farm.blender import devices
from farm.clock import db_now
from farm.config import Settings
from farm.errors import Unprocessable, ValidationError
from farm.jobs import planning, quotas, splitting, states, uploads
from farm.jobs.inputs import has_control_characters, shown, whole_number
from farm.jobs.scene_warnings import scene_warnings
from farm.jobs.scheduling import live_workers
from farm.messaging.dispatch import new_task_id
from farm.models import Chunk, Job, JobStatus, StoredBlob
from farm.projects import Blob, Manifest, blob_key, blob_store, dependencies, intake
from farm.storage import CHUNK, Storage, regular_file, sha256_file
from farm.storage.previews import store_thumbnail
from farm.webhooks import addresses

ENGINES = {
    "CYCLES": "CYCLES",
    "BLENDER_EEVEE_NEXT": "BLENDER_EEVEE_NEXT",
    "BLENDER_EEVEE": "BLENDER_EEVEE_NEXT",
    "EEVEE": "BLENDER_EEVEE_NEXT",
    "BLENDER_WORKBENCH": "BLENDER_WORKBENCH",
    "WORKBENCH": "BLENDER_WORKBENCH",
}
OUTPUT_FORMATS = ("PNG", "JPEG", "OPEN_EXR")
DEVICES = ("AUTO", "GPU", "CPU")
MAX_RESOLUTION = 16384
RESOLUTION_FIELDS = ("resolution_x", "resolution_y", "resolution_percentage")
PROJECT = "project"  # a job's source kind: a manifest of blobs (farm/projects/__init__.py)
PROBE_RENDERER = f"probe@{socket.gethostname()}"  # who rendered a kept probe frame: the submitting host
PREVIEW_PERCENTAGE = 25  # a preview job's resolution percentage (the form's own, if lower)
PREVIEW_SAMPLES = 16  # and its samples at most
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobForm:
    """The validated form, before the scene fills what the user left out."""

    name: str | None
    frame_start: int | None
    frame_end: int | None
    chunk_size: int | None
    engine: str | None
    samples: int | None
    resolution_x: int | None
    resolution_y: int | None
    resolution_percentage: int | None
    output_format: str
    device: str
    priority: int
    main: str | None
    strict: bool  # refuse the job when a file the scene uses is missing, instead of warning
    notify_url: str | None = None  # POSTed the job's end (farm.webhooks)
    preview: bool = False  # a quick look: PREVIEW_PERCENTAGE size, at most PREVIEW_SAMPLES, on the preview queue
    preview_movie: bool = True  # an MP4 of the frames beside the zip (jobs of two frames or more)
    split: int | None = None  # one still rendered in this many parts by several workers and merged


@dataclass(frozen=True)
class Upload:
    path: Path
    filename: str
    sha256: str
    size: int
    kind: str  # "blend" or "zip"


def _int(form: Mapping[str, str], field: str, lo: int, hi: int) -> int | None:
    raw = (form.get(field) or "").strip()
    if raw == "":
        return None
    value = whole_number(raw)
    if value is None:
        raise ValidationError(field, "not_an_integer", f"{field} must be a whole number, got {shown(raw)}")
    if value < lo:
        code = "negative" if value < 0 else "too_small"
        raise ValidationError(field, code, f"{field} must be at least {lo}, got {shown(raw)}")
    if value > hi:
        raise ValidationError(field, "too_large", f"{field} must be at most {hi}, got {shown(raw)}")
    return value


def _choice(form: Mapping[str, str], field: str, choices: Mapping[str, str] | tuple[str, ...]) -> str | None:
    raw = (form.get(field) or "").strip()
    if not raw:
        return None
    key = raw.upper()
    if key not in choices:
        names = ", ".join(dict.fromkeys(choices.values() if isinstance(choices, Mapping) else choices))
        raise ValidationError(field, "unknown_choice", f"{field} must be one of {names}, got {raw[:40]!r}")
    return choices[key] if isinstance(choices, Mapping) else key


def parse_form(form: Mapping[str, str], settings: Settings) -> JobForm:
    """Check every field the user sent; the first bad one raises ValidationError naming it."""
    name = (form.get("name") or "").strip() or None
    if name is not None:
        if len(name) > 200:
            raise ValidationError("name", "too_long", "name must be at most 200 characters")
        if has_control_characters(name):
            raise ValidationError("name", "bad_characters", "name must not contain control characters")
    main = (form.get("main") or "").strip() or None
    parsed = JobForm(
        name=name,
        frame_start=_int(form, "frame_start", 0, 10**9),
        frame_end=_int(form, "frame_end", 0, 10**9),
        chunk_size=_int(form, "chunk_size", 1, settings.max_frames),
        engine=_choice(form, "engine", ENGINES),
        samples=_int(form, "samples", 1, settings.max_samples),
        resolution_x=_int(form, "resolution_x", 4, MAX_RESOLUTION),
        resolution_y=_int(form, "resolution_y", 4, MAX_RESOLUTION),
        resolution_percentage=_int(form, "resolution_percentage", 1, 100),
        output_format=_choice(form, "output_format", OUTPUT_FORMATS) or "PNG",
        device=_choice(form, "device", DEVICES) or "AUTO",
        priority=_int(form, "priority", 0, 9) or 0,
        main=main,
        strict=_flag(form, "strict"),
        notify_url=addresses.check_notify_url(form.get("notify_url"), allow_private=settings.webhook_allow_private),
        preview=_flag(form, "preview"),
        preview_movie=_flag(form, "preview_movie", default=True),
        split=_split(form),
    )
    if parsed.split and parsed.preview:
        raise SplitRefused("split_with_preview", "a preview cannot be split: send split or preview, not both")
    if parsed.split and parsed.frame_start is not None and parsed.frame_end is not None:
        _check_one_frame(parsed.frame_start, parsed.frame_end)
    if parsed.preview:
        parsed = as_preview(parsed)
    _check_limits(settings, parsed, parsed.frame_start, parsed.frame_end, parsed.samples, _size(parsed, {}))
    return parsed


class SplitRefused(Unprocessable):
    """A `split` the farm cannot do as asked: always 422, naming the field."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__("split", code, message)


def _split(form: Mapping[str, str]) -> int | None:
    """The form's `split`, a whole number of parts from MIN_PARTS to MAX_PARTS; None when it is left out."""
    lo, hi = splitting.MIN_PARTS, splitting.MAX_PARTS
    try:
        return _int(form, "split", lo, hi)
    except ValidationError as exc:
        raise SplitRefused(exc.code, f"{exc.message} (split: parts of one still, {lo}-{hi})") from None


def _check_one_frame(frame_start: int, frame_end: int) -> None:
    if frame_end != frame_start:
        raise SplitRefused(
            "not_a_still",
            f"split renders one still, but the range is frames {frame_start}-{frame_end}: send frame_start and "
            "frame_end of the one frame",
        )


def as_preview(form: JobForm) -> JobForm:
    """The form of a preview job, which should come back in moments: a quarter of the resolution, one frame per
    chunk (spread over every worker; no probe frame is rendered to size chunks), and at most PREVIEW_SAMPLES
    samples (capped again once the probe has read the scene's own)."""
    return replace(
        form,
        resolution_percentage=min(form.resolution_percentage or 100, PREVIEW_PERCENTAGE),
        samples=min(form.samples, PREVIEW_SAMPLES) if form.samples else None,
        chunk_size=form.chunk_size or 1,
    )


def _flag(form: Mapping[str, str], field: str, *, default: bool = False) -> bool:
    raw = (form.get(field) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ValidationError(field, "not_a_flag", f"{field} must be 1 or 0, got {raw[:40]!r}")


def _size(form: JobForm, scene: Mapping[str, object]) -> tuple[int | None, int | None, int | None]:
    """Resolution x, y and percentage: the form's, else the scene's own (None where neither is known yet)."""
    x, y, percentage = (getattr(form, f) or scene.get(f) for f in RESOLUTION_FIELDS)
    return x, y, percentage


def _check_limits(
    settings: Settings,
    form: JobForm,
    frame_start: int | None,
    frame_end: int | None,
    samples: int | None,
    size: tuple[int | None, int | None, int | None],
) -> None:
    """What one job may ask of the farm, checked on what is known: the form alone before the probe, so no Blender
    starts for a job that would be refused, then again after it, with the scene's own values filling what the
    form left out (a .blend may carry 16,777,216 samples). The error names the field the user can change."""
    if frame_start is not None and frame_end is not None:
        field = "frame_end" if form.frame_end is not None else "frame_start"
        if frame_end < frame_start:
            raise ValidationError(field, "bad_range", f"frame_end ({frame_end}) is before frame_start ({frame_start})")
        count = frame_end - frame_start + 1
        if count > settings.max_frames:
            raise ValidationError(
                field,
                "too_many_frames",
                f"{count} frames requested; this farm renders at most {settings.max_frames} per job",
            )
        chunks = -(-count // form.chunk_size) if form.chunk_size else 0
        if chunks > settings.max_chunks:
            raise ValidationError(
                "chunk_size",
                "too_many_chunks",
                f"{count} frames in chunks of {form.chunk_size} make {chunks} chunks; this farm takes at most "
                f"{settings.max_chunks} per job (a chunk_size of {-(-count // settings.max_chunks)} or more)",
            )
    if samples is not None and samples > settings.max_samples:
        whose = "" if form.samples else "the scene's own "
        raise ValidationError(
            "samples",
            "too_large",
            f"{whose}samples ({samples}) are more than this farm renders ({settings.max_samples}); set samples lower",
        )
    x, y, percentage = size
    if x and y and percentage:
        width, height = x * percentage // 100, y * percentage // 100  # Blender scales both sides
        if width * height > settings.max_pixels:
            field = next((f for f in RESOLUTION_FIELDS if getattr(form, f)), "resolution_percentage")
            raise ValidationError(
                field,
                "too_many_pixels",
                f"a frame of {x}×{y} at {percentage}% is {width}×{height}, {width * height / 1e6:.1f} megapixels; "
                f"this farm renders at most {settings.max_pixels / 1e6:g} per frame: lower resolution_x, "
                "resolution_y or resolution_percentage",
            )


def save_upload(stream: IO[bytes] | None, filename: str | None, settings: Settings) -> Upload:
    """Copy the uploaded bytes to a temp file, hashing as they go; check they are a .blend or a .zip."""
    if stream is None or not filename:
        raise ValidationError("file", "missing", "a .blend or .zip file is required")
    tmp_dir = settings.instance_dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="upload-", dir=tmp_dir)
    digest = hashlib.sha256()
    size = 0
    head = b""
    try:
        with open(fd, "wb") as out:
            while block := stream.read(CHUNK):
                if len(head) < 65536:
                    head += block[: 65536 - len(head)]
                digest.update(block)
                size += len(block)
                if size > settings.max_upload_bytes:
                    raise UploadTooLarge(settings.max_upload_bytes)
                out.write(block)
    except BaseException:  # too large, or the disk filled (the web app answers 507): leave nothing behind
        Path(tmp).unlink(missing_ok=True)
        raise
    path = Path(tmp)
    if size == 0:
        path.unlink(missing_ok=True)
        raise ValidationError("file", "empty", "the uploaded file is empty")
    if uploads.is_zip(head):
        kind = "zip"
    elif uploads.is_blend(head):
        kind = "blend"
    else:
        path.unlink(missing_ok=True)
        raise ValidationError("file", "not_blend", "the file is neither a .blend (any Blender version) nor a .zip")
    return Upload(path=path, filename=Path(filename).name, sha256=digest.hexdigest(), size=size, kind=kind)


class NoGpuWorker(ValidationError):
    """device=GPU while no online worker has a GPU: refused now rather than queued for a worker that may never come,
    and never rendered on a CPU."""

    status = 409

    def __init__(self) -> None:
        super().__init__(
            "device",
            "no_gpu_worker",
            f"device GPU was asked for, but no online worker has a GPU ({devices.NO_GPU} on any of them); "
            "submit with device AUTO or CPU, or start `farm worker --gpus all` on a GPU machine",
        )


class UploadTooLarge(ValidationError):
    status = 413

    def __init__(self, limit: int) -> None:
        super().__init__("file", "too_large", f"the upload is larger than {limit // 2**20} MiB")


def create_job(
    session: Session,
    storage: Storage,
    settings: Settings,
    manifest: Manifest,
    form: JobForm,
    *,
    owner: str | None,
    slots: int = 1,
) -> tuple[Job, dict[int, str]]:
    """Probe, check the project's files, store and plan; adds the job, its chunks and frames to `session` (the
    caller commits, then sends the tasks). Returns the job and, per chunk id, the id of the task that will render
    it, recorded with the chunk. Every blob of `manifest` is in the blob store already.
    A file the scene uses that the project lacks is a `missing_file` warning, or with `strict` a refusal.
    GPU-only jobs go to the GPU queue; without a chunk size, the probe also times one frame to size the chunks, and
    that frame, rendered with the job's settings, is kept as the job's first frame instead of being rendered twice."""
    quotas.check_active_jobs(session, settings, owner)  # before Blender is started for the probe
    queue = devices.gpu_queue(settings.queue) if form.device == "GPU" else settings.queue
    if form.device == "GPU" and not live_workers(session, queue, settings):
        raise NoGpuWorker()
    if form.preview:
        queue = devices.preview_queue(queue)
    tmp = settings.instance_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="probe-", dir=tmp) as workdir:
        scene, found = intake.build_and_inspect(
            settings, storage, manifest, Path(workdir), _probe_frame_spec(form, settings, Path(workdir))
        )
        if form.strict:
            dependencies.refuse_missing(found)
        probe_frame = scene.pop("probe_frame", None)
        scene["warnings"] = [*scene_warnings(scene), *scene.get("warnings", [])]  # then each file not found
        if not scene.get("camera"):
            raise ValidationError(
                "file", "no_camera", f"scene {scene.get('scene')!r} has no active camera to render from"
            )

        frame_start = form.frame_start if form.frame_start is not None else max(0, int(scene["frame_start"]))
        frame_end = form.frame_end if form.frame_end is not None else int(scene["frame_end"])
        samples, size = form.samples or scene.get("samples"), _size(form, scene)
        if form.preview:
            samples = min(samples or PREVIEW_SAMPLES, PREVIEW_SAMPLES)
        _check_limits(settings, form, frame_start, frame_end, samples, size)
        count = frame_end - frame_start + 1
        quotas.check_queued_frames(session, settings, owner, count)
        engine = form.engine or scene.get("engine")
        if form.split:
            _check_split(form.split, frame_start, frame_end, engine, samples, size)
            plan = [(frame_start, frame_end)] * form.split  # one chunk per part, each of the one frame
        elif form.chunk_size:
            plan = planning.plan_chunks(frame_start, frame_end, min(form.chunk_size, count))
        else:
            plan = planning.adaptive_chunks(
                frame_start,
                frame_end,
                frame_seconds=_frame_seconds(scene, settings),
                slots=slots,
                target_seconds=settings.chunk_target_seconds,
                max_chunks=settings.max_chunks,
            )
        chunk_size = max(e - s + 1 for s, e in plan)

        listing = manifest.to_bytes()
        manifest_blob = Blob(manifest.sha256, len(listing))
        if blob_store.missing(session, [manifest_blob]):
            storage.put_bytes(blob_key(manifest_blob.sha256), listing, "application/json")
            session.merge(StoredBlob(sha256=manifest_blob.sha256, size=manifest_blob.size))

        default_name = PurePosixPath(manifest.main).stem or "render"
        job = Job(
            name=form.name or default_name[:200],
            status=JobStatus.QUEUED,
            owner=owner,
            source_key=blob_key(manifest_blob.sha256),
            source_sha256=manifest_blob.sha256,
            source_kind=PROJECT,
            main=manifest.main,
            scene=scene,
            frame_start=frame_start,
            frame_end=frame_end,
            chunk_size=chunk_size,
            engine=engine,
            samples=samples,
            resolution_x=size[0],
            resolution_y=size[1],
            resolution_percentage=size[2],
            output_format=form.output_format,
            device=form.device,
            priority=form.priority,
            queue=queue,
            notify_url=form.notify_url,
            preview=form.preview,
            preview_movie=form.preview_movie,
            split=form.split or 1,
        )
        session.add(job)
        session.flush()
        blob_store.use(session, job.id, [manifest_blob.sha256, *(b.sha256 for b in manifest.files.values())])
        states.job_created(session, job, reason=f"submitted: frames {frame_start}-{frame_end}", actor=owner)
        chunks = [
            {
                "job_id": job.id,
                "index": i,
                "frame_start": s,
                "frame_end": e,
                "task_id": new_task_id(),
            }
            for i, (s, e) in enumerate(plan)
        ]
        dispatched = insert(Chunk).values(dispatched_at=db_now())  # the database's clock, like every dispatch
        chunk_ids = session.scalars(dispatched.returning(Chunk.id, sort_by_parameter_order=True), chunks).all()
        # No frame rows: each chunk's are made when a worker claims it (`states.make_frame_rows`).
        kept = type(probe_frame) is int and frame_start <= probe_frame <= frame_end
        if kept and form.device != "GPU":  # a GPU job gets no frame rendered on the web host's CPU
            image = Path(workdir) / f"probe.{planning.EXTENSIONS[job.output_format]}"  # where the probe writes it
            index = next(i for i, (s, e) in enumerate(plan) if s <= probe_frame <= e)
            keep_probe_frame(session, storage, job, (index, probe_frame), image, scene["probe_frame_ms"])
        return job, {cid: chunk["task_id"] for cid, chunk in zip(chunk_ids, chunks, strict=True)}


def keep_probe_frame(
    session: Session, storage: Storage, job: Job, where: tuple[int, int], image: Path, ms: float
) -> None:
    """Store and record the probe's frame (the chunk index holding it, its number) as the worker would
    (content-addressed, with its thumbnail), its chunk's frame rows made for it. Best effort: if it cannot be stored
    now, a worker renders it like any other frame."""
    index, frame = where
    if not regular_file(image):
        return
    ext = planning.EXTENSIONS[job.output_format]
    sha256 = sha256_file(image)
    key = planning.frame_key(job.id, frame, ext, job.frame_end, sha256)
    try:
        storage.put_file(key, image, planning.CONTENT_TYPES[ext])
        store_thumbnail(storage, key, image)
    except Exception as exc:  # storage away: not a reason to refuse the job
        log.warning("could not keep the probe frame of job %s: %s", job.id, exc)
        return
    states.make_frame_rows(session, job, index)
    states.frame_done(
        session,
        job.id,
        frame,
        worker=PROBE_RENDERER,
        render_time_ms=ms,
        device="CPU",
        image_key=key,
        sha256=sha256,
        size=image.stat().st_size,
    )


def _probe_frame_spec(form: JobForm, settings: Settings, workdir: Path) -> dict[str, object] | None:
    """What the probe renders to time a frame, or None when the user chose the chunk size. Past the farm's limits
    it renders none: that job is refused. Nor for a split still: its chunks are its parts."""
    if form.chunk_size or form.split:
        return None
    return {
        "frame": form.frame_start,
        "out": str(workdir),
        "engine": form.engine,
        "samples": form.samples,
        "resolution_x": form.resolution_x,
        "resolution_y": form.resolution_y,
        "resolution_percentage": form.resolution_percentage,
        "output_format": form.output_format,
        "max_samples": settings.max_samples,
        "max_pixels": settings.max_pixels,
    }


def _check_split(
    parts: int,
    frame_start: int,
    frame_end: int,
    engine: str | None,
    samples: int | None,
    size: tuple[int | None, int | None, int | None],
) -> None:
    """A split still, once the scene filled what the form left out: one frame, and enough samples (Cycles) or rows
    (other engines) for every part to have some."""
    _check_one_frame(frame_start, frame_end)
    x, y, percentage = size
    pixels = splitting.frame_size(x, y, percentage) if x and y and percentage else None
    why = splitting.refusal(engine=engine, samples=samples, size=pixels, parts=parts)
    if why:
        raise SplitRefused("too_many_parts", why)


def _frame_seconds(scene: dict[str, object], settings: Settings) -> float:
    """The probe frame's time; a frame too slow to time fully counts as a whole target (one-frame chunks)."""
    measured = scene.get("probe_frame_ms")
    return float(measured) / 1000 if isinstance(measured, int | float) else settings.chunk_target_seconds


def discard_upload(upload: Upload) -> None:
    upload.path.unlink(missing_ok=True)
