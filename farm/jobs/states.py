"""The one place where a job, chunk, frame or worker changes status.

Every change is a compare-and-set on the row (so two processes racing cannot both win), is checked against the
allowed transitions, bumps the job's `version` (what live views watch) and writes an `Event` row saying what
changed, from what, why and by whom.

Every time that says whether someone is alive (heartbeats, claims, dispatches, a job's last change) is the database
server's clock (`NOW`, SQL's `now()`), never this machine's: staleness is judged by one clock, not by comparing two.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, cast

from sqlalchemy import Table, bindparam, exists, func, insert, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from farm.clock import aware, db_now
from farm.jobs.scheduling import failed_by, since_requeued
from farm.models import (
    Chunk,
    ChunkStatus,
    Event,
    Frame,
    FrameStatus,
    Job,
    JobStatus,
    Worker,
    WorkerStatus,
    utcnow,
)

J, C, F = JobStatus, ChunkStatus, FrameStatus

JOB_FLOW: dict[str, set[str]] = {
    J.QUEUED: {J.RENDERING, J.PACKAGING, J.FAILED, J.CANCELING, J.CANCELED},
    J.RENDERING: {J.PACKAGING, J.FAILED, J.CANCELING, J.CANCELED},
    J.PACKAGING: {J.UPLOADING, J.FAILED, J.CANCELING, J.CANCELED},
    J.UPLOADING: {J.COMPLETED, J.PACKAGING, J.FAILED, J.CANCELING, J.CANCELED},  # PACKAGING: a resumed attempt
    J.CANCELING: {J.CANCELED},
    J.FAILED: {J.QUEUED},
    J.CANCELED: {J.QUEUED},
    J.COMPLETED: set(),
}
CHUNK_FLOW: dict[str, set[str]] = {
    C.QUEUED: {C.RENDERING, C.DONE, C.CANCELED, C.FAILED},
    C.RENDERING: {C.DONE, C.FAILED, C.CANCELED, C.QUEUED},
    C.FAILED: {C.QUEUED},
    C.CANCELED: {C.QUEUED},
    C.DONE: set(),
}
FRAME_FLOW: dict[str, set[str]] = {
    F.QUEUED: {F.RENDERING, F.DONE},
    F.RENDERING: {F.DONE, F.FAILED, F.QUEUED},
    F.FAILED: {F.QUEUED},
    F.DONE: set(),
}
NOW = db_now()  # as a value given to `_set`: the database's clock at the statement
ACTIVE_JOB = frozenset({J.QUEUED, J.RENDERING, J.PACKAGING, J.UPLOADING})
TERMINAL_JOB = frozenset({J.COMPLETED, J.FAILED, J.CANCELED})


class IllegalTransition(Exception):
    """A change the state machine forbids, e.g. canceling a COMPLETED job."""

    def __init__(self, kind: str, subject: str, old: str, new: str) -> None:
        super().__init__(f"{kind} {subject} cannot go from {old} to {new}")
        self.kind, self.subject, self.old, self.new = kind, subject, old, new


JOBS, CHUNKS, FRAMES, EVENTS = (cast(Table, m.__table__) for m in (Job, Chunk, Frame, Event))
MODELS: dict[Table, Any] = {JOBS: Job, CHUNKS: Chunk, FRAMES: Frame}


def _core(session: Session, statement: Any, params: dict[str, Any] | None = None) -> CursorResult[Any]:
    """Run a Core statement in the session's transaction. A chunk's claim and end and every frame's record come
    through here with statements built once: building ORM statements per call cost more than Postgres's work."""
    return session.connection().execute(statement, params or {})


@cache
def _update(
    table: Table,
    where: tuple[str, ...],
    values: tuple[str, ...],
    returning: str | None = None,
    now: tuple[str, ...] = (),
) -> Any:
    """`UPDATE table SET values WHERE where` (equalities with values that are never None), a bound parameter per
    name (`w_<name>`, `v_<name>`), and the database's clock for the names in `now`, built once per shape. A job's
    update always bumps its `version`, which is what live views watch, and sets `updated_at`."""
    changes: dict[str, Any] = {name: bindparam(f"v_{name}") for name in values}
    changes |= {name: db_now() for name in now}
    if table is JOBS:
        changes["version"] = JOBS.c.version + 1
        changes["updated_at"] = db_now()
    statement = update(table).where(*(table.c[name] == bindparam(f"w_{name}") for name in where)).values(changes)
    return statement.returning(table.c[returning]) if returning else statement


def _set(
    session: Session, table: Table, where: dict[str, Any], values: dict[str, Any], returning: str | None = None
) -> CursorResult[Any]:
    """Update the rows matching `where` (a compare-and-set when it names the status), and keep an object of the row
    that the session has loaded in step, as an ORM update would. A value given as `NOW` is the database's clock."""
    now = tuple(k for k, v in values.items() if v is NOW)
    bound = {k: v for k, v in values.items() if v is not NOW}
    params = {f"w_{k}": v for k, v in where.items()} | {f"v_{k}": v for k, v in bound.items()}
    result = _core(session, _update(table, tuple(where), tuple(bound), returning, now), params)
    (pk,) = table.primary_key.columns
    loaded = _loaded(session, table, where[pk.name]) if pk.name in where else None
    if loaded is not None and result.rowcount != 0:  # -1: unknown (SQLite with RETURNING), and the row is there
        for name, value in bound.items():
            set_committed_value(loaded, name, value)
        expired = [*now, *(["version", "updated_at"] if table is JOBS else [])]
        if expired:
            session.expire(loaded, expired)
    if table is JOBS and "status" in values and result.rowcount != 0:
        _touched(session)[where["id"]] = values["status"]
    return result


def _touched(session: Session) -> dict[str, str]:
    """Jobs this transaction has updated, with their status now. Their rows stay locked until it ends, so a second
    touch in it would only bump `version` again: watchers see all of a transaction's changes at once anyway."""
    transaction = session.connection().get_transaction()  # begins one if none has begun (as any statement would)
    memo = session.info.get("farm.touched")
    if memo is None or memo[0] is not transaction:
        memo = session.info["farm.touched"] = (transaction, {})
    return memo[1]


def _loaded(session: Session, table: Table, key: Any) -> Any:
    """The session's object for the row, if it has loaded one."""
    return session.identity_map.get(identity_key(MODELS[table], key))


@cache
def _status_for_update(table: Table) -> Any:
    (pk,) = table.primary_key.columns
    return select(table.c.status).where(pk == bindparam("key")).with_for_update()


def _record(
    session: Session,
    kind: str,
    subject: Any,
    job_id: str | None,
    old: str | None,
    new: str,
    reason: str | None,
    actor: str | None,
) -> None:
    row = dict(kind=kind, subject=str(subject), job_id=job_id, old=old, new=new, reason=reason, actor=actor)
    _core(session, _EVENT, dict(row, created_at=utcnow()))


_EVENT = insert(EVENTS)


def touch_job(session: Session, job_id: str, **values: Any) -> str | None:
    """Tell watchers something about the job changed (setting `values` in the same statement); its status. Without
    `values`, once per transaction: a chunk's end in the transaction that recorded its last frame costs no UPDATE."""
    touched = _touched(session)
    if not values and job_id in touched:
        return touched[job_id]
    status = _set(session, JOBS, {"id": job_id}, values, returning="status").scalar()
    if status is not None:
        touched[job_id] = status
    return status


def _move(
    session: Session,
    table: Table,
    key: Any,
    new: str,
    *,
    flow: dict[str, set[str]],
    strict: bool,
    only_from: Iterable[str] | None,
    values: dict[str, Any],
    guard: dict[str, Any] | None = None,
) -> str | None:
    """Compare-and-set the status of `table`'s row `key` to `new` (and `guard`, columns that must still hold what
    was read); returns the old status, or None if nothing changed. A move with one legal origin is a single UPDATE;
    the others read first."""
    (pk,) = table.primary_key.columns
    allowed_from = set(only_from) if only_from is not None else None
    origins = {old for old, targets in flow.items() if new in targets and (allowed_from is None or old in allowed_from)}
    changes = dict(values, status=new)

    def moved_from(old: str) -> bool:
        return _set(session, table, {pk.name: key, "status": old, **(guard or {})}, changes).rowcount == 1

    if len(origins) == 1:
        (origin,) = origins
        if moved_from(origin):
            return origin
    for _ in range(5):
        old = _core(session, _status_for_update(table), {"key": key}).scalar()
        if old is None:
            raise LookupError(f"no {table.name} row {key}")
        legal = new in flow[old] and (allowed_from is None or old in allowed_from)
        if not legal:
            if strict and old != new:
                raise IllegalTransition(table.name.rstrip("s"), str(key), old, new)
            return None
        if moved_from(old):
            return old
    return None


def move_job(
    session: Session,
    job_id: str,
    new: JobStatus,
    *,
    reason: str | None = None,
    actor: str | None = None,
    strict: bool = False,
    only_from: Iterable[str] | None = None,
    **values: Any,
) -> bool:
    """Change a job's status; False (or IllegalTransition when strict) if it is not allowed from where it is."""
    if new in TERMINAL_JOB:
        values.setdefault("finished_at", NOW)
    if new == J.FAILED:
        values.setdefault("error", reason)
    old = _move(session, JOBS, job_id, new, flow=JOB_FLOW, strict=strict, only_from=only_from, values=values)
    if old is None:
        return False
    _record(session, "job", job_id, job_id, old, new, reason, actor)
    return True


def move_chunk(
    session: Session,
    chunk: Chunk,
    new: ChunkStatus,
    *,
    reason: str | None = None,
    actor: str | None = None,
    only_from: Iterable[str] | None = None,
    guard: dict[str, Any] | None = None,
    job_values: dict[str, Any] | None = None,
    **values: Any,
) -> str | None:
    """Change a chunk's status (touching its job, with `job_values`); the job's status then, or None if the chunk
    could not move."""
    old = _move(
        session, CHUNKS, chunk.id, new, flow=CHUNK_FLOW, strict=False, only_from=only_from, values=values, guard=guard
    )
    if old is None:
        return None
    _record(session, "chunk", f"{chunk.job_id}/{chunk.index}", chunk.job_id, old, new, reason, actor)
    return touch_job(session, chunk.job_id, **(job_values or {}))


def _move_frames(session: Session, chunk_id: int, frm: Iterable[str], new: FrameStatus) -> list[int]:
    """Bulk change of a chunk's frames (not events: one row per frame per attempt would drown the trail); the
    frame numbers moved."""
    return sorted(_core(session, _frames_moving(tuple(frm), new), {"w_chunk_id": chunk_id}).scalars())


@cache
def _frames_moving(frm: tuple[str, ...], new: str) -> Any:
    return (
        update(FRAMES)
        .where(FRAMES.c.chunk_id == bindparam("w_chunk_id"), FRAMES.c.status.in_(frm))
        .values(status=new)
        .returning(FRAMES.c.frame)
    )


def job_created(session: Session, job: Job, *, reason: str, actor: str | None) -> None:
    """The first event of a job's trail (its status starts at QUEUED)."""
    _record(session, "job", job.id, job.id, None, job.status, reason, actor)


# --- chunks and frames, as workers see them --------------------------------------------------------------------


def _take_over(session: Session, chunk: Chunk, worker: str, stale_before: datetime) -> bool:
    """A RENDERING chunk whose renderer stopped heartbeating changes hands (compare-and-set on its heartbeat)."""
    if chunk.heartbeat_at is None or aware(chunk.heartbeat_at) >= stale_before:
        return False
    taken = _set(
        session,
        CHUNKS,
        {"id": chunk.id, "status": C.RENDERING, "heartbeat_at": chunk.heartbeat_at},
        {"heartbeat_at": NOW},
    ).rowcount
    if taken:
        _record(
            session,
            "chunk",
            f"{chunk.job_id}/{chunk.index}",
            chunk.job_id,
            C.RENDERING,
            C.RENDERING,
            f"taken over from {chunk.worker}, which stopped heartbeating",
            worker,
        )
    return bool(taken)


@dataclass(frozen=True)
class Admission:
    """What the claiming read found about the claimer: a DISABLED worker takes nothing, and `failed` is how many of
    the job's chunks it failed since the job was last queued (for the blocklist); and about the chunk: how many
    frames it holds and the job's mean stored frame size so far (for the worker's disk)."""

    disabled: bool
    failed: int
    frames: int
    frame_bytes: float


@dataclass(frozen=True)
class Claim:
    """A chunk just claimed, its job, and the frames left to render (every one not DONE, in order)."""

    chunk: Chunk
    job: Job
    frames: list[int]


def claim_chunk(
    session: Session,
    chunk_id: int,
    worker: str,
    task_id: str | None,
    *,
    stale_after: timedelta | None = None,
    log_key: Callable[[Chunk, int], str] | None = None,
    admit: Callable[[Admission], None] | None = None,
) -> Claim | None:
    """Take a chunk for `worker`: a QUEUED one, or a RENDERING one whose renderer has been silent for `stale_after`
    by the database's clock. None if it is not renderable now (done, alive elsewhere, job not active): the database, not
    the broker, decides who renders a chunk, so a re-delivered message never renders it twice. `log_key` names
    where this attempt's Blender log will be stored, from the chunk and the attempt's number. `admit` sees what the
    same read found about `worker`, before anything is written, and raises to refuse the chunk.

    A chunk is claimed on every task, so this is a handful of statements: one read, then compare-and-set writes."""
    found = session.execute(_CLAIMING, {"chunk_id": chunk_id, "worker": worker}).first()
    if found is None:
        return None
    chunk, job, disabled, failed, frame_bytes, db_time = found
    if admit is not None:
        frames = chunk.frame_end - chunk.frame_start + 1
        admit(Admission(disabled=bool(disabled), failed=failed or 0, frames=frames, frame_bytes=frame_bytes or 0.0))
    if job.status not in (J.QUEUED, J.RENDERING):
        return None
    claim = dict(
        attempts=chunk.attempts + 1,
        worker=worker,
        task_id=task_id,
        started_at=NOW,
        heartbeat_at=NOW,
        finished_at=None,
        error=None,
        log_key=log_key(chunk, chunk.attempts + 1) if log_key else chunk.log_key,
        frame_progress=0.0,
    )
    stale = chunk.status == C.RENDERING and stale_after is not None
    if stale and _take_over(session, chunk, worker, aware(db_time) - stale_after):
        _set(session, CHUNKS, {"id": chunk.id}, claim)
        touch_job(session, job.id, worker_host=worker)
    elif not move_chunk(
        session,
        chunk,
        C.RENDERING,
        actor=worker,
        reason="claimed",
        only_from=[C.QUEUED],
        guard={"attempts": chunk.attempts},  # attempts is set from what was read: nobody claimed it since
        job_values={"worker_host": worker},
        **claim,
    ):
        return None
    frames = _move_frames(session, chunk.id, [F.QUEUED, F.FAILED, F.RENDERING], F.RENDERING)
    if job.status == J.QUEUED:
        move_job(session, job.id, J.RENDERING, actor=worker, reason="first chunk started", only_from=[J.QUEUED])
    return Claim(chunk=chunk, job=job, frames=frames)


_CLAIMING = (
    select(
        Chunk,
        Job,
        select(Worker.status).where(Worker.hostname == bindparam("worker")).scalar_subquery() == WorkerStatus.DISABLED,
        failed_by(Chunk.job_id, bindparam("worker")),
        select(func.avg(Frame.size))
        .where(Frame.job_id == Chunk.job_id, Frame.status == F.DONE)
        .correlate(Chunk)
        .scalar_subquery(),
        db_now(),
    )
    .join(Job, Job.id == Chunk.job_id)
    .where(Chunk.id == bindparam("chunk_id"))
)


def chunk_heartbeat(session: Session, chunk_id: int, worker: str, attempt: int) -> bool:
    """The renderer is alive; False means the chunk is no longer ours (taken back, or taken over: by another
    worker, or by this one again in a later attempt)."""
    where = {"id": chunk_id, "worker": worker, "status": C.RENDERING, "attempts": attempt}
    return bool(_set(session, CHUNKS, where, {"heartbeat_at": NOW}).rowcount)


def chunk_progress(
    session: Session, job_id: str, chunk_id: int, worker: str, attempt: int, frame_progress: float, progress: float
) -> bool:
    """The renderer's progress within its frame (0-1) and chunk (0-100), and a nudge to the job's live views; False
    if the chunk is no longer this attempt's (nothing is written then)."""
    where = {"id": chunk_id, "worker": worker, "status": C.RENDERING, "attempts": attempt}
    values = {"frame_progress": frame_progress, "progress": progress}
    if not _set(session, CHUNKS, where, values).rowcount:
        return False
    touch_job(session, job_id)
    return True


def requeue_chunk(session: Session, chunk: Chunk, *, task_id: str, reason: str, actor: str | None) -> bool:
    """Put a chunk back in the queue under a new task id (a retry, or its renderer died); the caller dispatches
    `task_id` after commit. Only the attempt `chunk` was read in: never one claimed since. Frames already DONE
    stay done."""
    if not move_chunk(
        session,
        chunk,
        C.QUEUED,
        reason=reason,
        actor=actor,
        only_from=[C.RENDERING, C.FAILED],
        guard={"attempts": chunk.attempts},
        task_id=task_id,
        dispatched_at=NOW,
        heartbeat_at=None,
        worker=None,
    ):
        return False
    _move_frames(session, chunk.id, [F.RENDERING, F.FAILED], F.QUEUED)
    return True


def replace_task(session: Session, chunk_id: int, old_task_id: str | None, new_task_id: str) -> bool:
    """Swap a QUEUED chunk's lost task for a new one; compare-and-set, so two janitors never both re-send it."""
    return bool(
        session.execute(
            update(Chunk)
            .where(Chunk.id == chunk_id, Chunk.status == C.QUEUED, Chunk.task_id == old_task_id)
            .values(task_id=new_task_id, dispatched_at=db_now())
        ).rowcount
    )


def frame_done(
    session: Session,
    job_id: str,
    frame: int,
    *,
    worker: str,
    render_time_ms: float,
    device: str | None,
    image_key: str,
    sha256: str,
    size: int,
    attempt: int | None = None,
) -> bool:
    """Record a stored frame; False if it was already done (a re-run must not count it twice), or, given the
    `attempt` of the chunk that `worker` rendered it in, if that chunk is no longer rendering there in that attempt
    (the janitor gave it to another worker while this one could not reach the database)."""
    now = utcnow()
    stored = (render_time_ms, worker, device, image_key, sha256, size)
    params = {f"v_{name}": value for name, value in zip(_FRAME_STORED, stored, strict=True)}
    params |= dict(w_job_id=job_id, w_frame=frame, v_finished_at=now)
    if attempt is None:
        done = _core(session, _FRAME_DONE, params)
    else:
        done = _core(session, _FRAME_DONE_IN_CLAIM, dict(params, w_worker=worker, w_attempt=attempt))
    if done.rowcount != 1:
        return False
    _record(session, "frame", f"{job_id}/{frame}", job_id, F.RENDERING, F.DONE, f"{render_time_ms:.0f} ms", worker)
    counted = _core(session, _FRAME_COUNTED, dict(job_id=job_id, render_time_ms=render_time_ms, frame=frame))
    status = counted.scalar()
    if status is not None:
        _touched(session)[job_id] = status
    job = _loaded(session, JOBS, job_id)
    if job is not None:
        session.expire(job, ["frames_rendered", "render_ms_total", "latest_frame", "version", "updated_at"])
    return True


_FRAME_STORED = ("render_time_ms", "worker", "device", "image_key", "sha256", "size")
_FRAME_DONE = (
    update(FRAMES)
    .where(FRAMES.c.job_id == bindparam("w_job_id"), FRAMES.c.frame == bindparam("w_frame"), FRAMES.c.status != F.DONE)
    .values(
        {name: bindparam(f"v_{name}") for name in _FRAME_STORED}
        | {"status": F.DONE, "finished_at": bindparam("v_finished_at")}
    )
)
_FRAME_DONE_IN_CLAIM = _FRAME_DONE.where(
    exists().where(
        CHUNKS.c.id == FRAMES.c.chunk_id,
        CHUNKS.c.status == C.RENDERING,
        CHUNKS.c.worker == bindparam("w_worker"),
        CHUNKS.c.attempts == bindparam("w_attempt"),
    )
)
_FRAME_COUNTED = (
    update(JOBS)
    .where(JOBS.c.id == bindparam("job_id"))
    .values(
        frames_rendered=JOBS.c.frames_rendered + 1,
        render_ms_total=JOBS.c.render_ms_total + bindparam("render_time_ms"),
        latest_frame=bindparam("frame"),
        version=JOBS.c.version + 1,
        updated_at=db_now(),
    )
    .returning(JOBS.c.status)
)


def finish_chunk(
    session: Session,
    chunk: Chunk,
    new: ChunkStatus,
    *,
    worker: str,
    reason: str | None = None,
    log_key: str | None = None,
    attempt: int | None = None,
) -> str | None:
    """End a rendering chunk as DONE, FAILED or CANCELED (which frees its worker: what a worker renders is read
    from the chunks); the job's status, or None if the chunk was not rendering (by `worker` in `attempt`, when
    given: a renderer that lost its claim never ends the chunk its successor renders). DONE means every frame was
    recorded DONE, so only the other endings move frames."""
    frame_status = F.FAILED if new == C.FAILED else F.QUEUED
    job_status = move_chunk(
        session,
        chunk,
        new,
        actor=worker,
        reason=reason,
        only_from=[C.RENDERING],
        guard=None if attempt is None else {"worker": worker, "attempts": attempt},
        finished_at=NOW,
        error=reason if new == C.FAILED else None,
        log_key=log_key,
        frame_progress=0.0,
        **({"progress": 100.0} if new == C.DONE else {}),
    )
    if job_status is not None and new != C.DONE:
        _move_frames(session, chunk.id, [F.RENDERING], frame_status)
    return job_status


UNFINISHED_CHUNK = (C.QUEUED, C.RENDERING, C.FAILED, C.CANCELED)


def chunks_left(session: Session, job_id: str) -> int:
    """Chunks of a job not yet DONE."""
    return session.execute(
        select(func.count()).select_from(Chunk).where(Chunk.job_id == job_id, Chunk.status.in_(UNFINISHED_CHUNK))
    ).scalar_one()


def chunks_pending(session: Session, job_id: str) -> tuple[bool, bool]:
    """Whether any chunk of the job is not DONE, and whether any is still QUEUED. Asked at every chunk's end, so
    it is two index probes in one statement rather than counts over the job's chunks."""
    left, waiting = _core(session, _PENDING, {"job_id": job_id}).one()
    return bool(left), bool(waiting)


_OF_JOB = select(CHUNKS.c.id).where(CHUNKS.c.job_id == bindparam("job_id"))
_PENDING = select(
    exists(_OF_JOB.where(CHUNKS.c.status.in_(UNFINISHED_CHUNK))), exists(_OF_JOB.where(CHUNKS.c.status == C.QUEUED))
)


def chunks_running(session: Session, job_id: str) -> int:
    return session.execute(
        select(func.count()).select_from(Chunk).where(Chunk.job_id == job_id, Chunk.status == C.RENDERING)
    ).scalar_one()


# --- jobs, as users and the packager see them ------------------------------------------------------------------


def cancel_job(session: Session, job_id: str, *, actor: str | None) -> None:
    """Stop a job: queued chunks are canceled now; with chunks still rendering it waits in CANCELING."""
    running = chunks_running(session, job_id)
    target = J.CANCELING if running else J.CANCELED
    move_job(session, job_id, target, reason="canceled by user", actor=actor, strict=True)
    for chunk in session.scalars(select(Chunk).where(Chunk.job_id == job_id, Chunk.status == C.QUEUED)):
        move_chunk(session, chunk, C.CANCELED, actor=actor, reason="job canceled")


def settle_cancel(session: Session, job_id: str, *, actor: str | None) -> bool:
    """CANCELING becomes CANCELED once no chunk of the job is rendering."""
    if chunks_running(session, job_id):
        return False
    return move_job(session, job_id, J.CANCELED, reason="no chunk left running", actor=actor, only_from=[J.CANCELING])


def fail_job(session: Session, job_id: str, reason: str, *, actor: str | None) -> bool:
    """Fail an active job and stop its queued chunks; frames already rendered are kept."""
    if not move_job(session, job_id, J.FAILED, reason=reason, actor=actor, only_from=ACTIVE_JOB):
        return False
    for chunk in session.scalars(select(Chunk).where(Chunk.job_id == job_id, Chunk.status == C.QUEUED)):
        move_chunk(session, chunk, C.CANCELED, actor=actor, reason="job failed")
    return True


_CULPRIT = re.compile(r"Dependency (\S+) raised")


def fail_job_for_chord(session: Session, job_id: str, reason: str, *, actor: str | None) -> bool:
    """Fail a job whose chord reported a crashed render task, unless the report is stale: tasks revoked by a cancel
    (already recorded), or a task that no longer renders its chunk — a canceled run's chord may report after the
    user's retry has sent new tasks, and must not fail the new run."""
    if "TaskRevokedError" in reason:
        return False
    culprit = _CULPRIT.search(reason)
    if culprit:
        chunk = session.scalar(select(Chunk).where(Chunk.job_id == job_id, Chunk.task_id == culprit.group(1)))
        if chunk is None or chunk.status not in (C.QUEUED, C.RENDERING):
            return False
    return fail_job(session, job_id, reason, actor=actor)


def retry_job(session: Session, job_id: str, *, actor: str | None) -> list[int]:
    """Re-queue a FAILED or CANCELED job's unfinished chunks; returns their ids for dispatch."""
    move_job(session, job_id, J.QUEUED, reason="retried", actor=actor, strict=True, error=None, finished_at=None)
    ids = []
    for chunk in session.scalars(select(Chunk).where(Chunk.job_id == job_id, Chunk.status != C.DONE)):
        move_chunk(session, chunk, C.QUEUED, actor=actor, reason="job retried", error=None)
        _move_frames(session, chunk.id, [F.FAILED, F.RENDERING], F.QUEUED)
        ids.append(chunk.id)
    return ids


def complete_job(
    session: Session,
    job_id: str,
    *,
    asset_key: str,
    asset_filename: str,
    asset_size: int,
    actor: str | None,
    movie: tuple[str, str, int] | None = None,
) -> bool:
    """UPLOADING → COMPLETED with the zip's location, and the preview movie's (key, filename, size) if one was made."""
    movie_key, movie_filename, movie_size = movie or (None, None, None)
    return move_job(
        session,
        job_id,
        J.COMPLETED,
        reason="zip stored",
        actor=actor,
        only_from=[J.UPLOADING],
        asset_key=asset_key,
        asset_filename=asset_filename,
        asset_size=asset_size,
        movie_key=movie_key,
        movie_filename=movie_filename,
        movie_size=movie_size,
        error=None,  # a failed packaging attempt before this one is history, in the events
    )


# --- packaging attempts ----------------------------------------------------------------------------------------

PACKAGING_NOW = (J.PACKAGING, J.UPLOADING)


def packaging_attempts(session: Session, job_id: str) -> int:
    """Packaging attempts the job has had since it was last (re)queued. Each begins with an event into PACKAGING
    (the first moves the job there, a resumed one records it again), so the count holds however often the janitor
    or the broker sends packaging again, and a user's retry starts afresh."""
    return session.execute(
        select(func.count()).where(
            Event.job_id == job_id, Event.kind == "job", Event.new == J.PACKAGING, since_requeued(job_id)
        )
    ).scalar_one()


def _packaging_status(session: Session, job_id: str) -> str | None:
    """The job's status, its row locked, if a packager has it; else None."""
    status = _core(session, _status_for_update(JOBS), {"key": job_id}).scalar()
    return status if status in PACKAGING_NOW else None


def restart_packaging(session: Session, job_id: str, *, attempts: int, actor: str | None) -> int | None:
    """Begin another packaging attempt of a job a packager left in PACKAGING or UPLOADING (it failed or died): the
    attempt's number, or None if no packager has the job, or if its `attempts` are spent — then the job is FAILED."""
    status = _packaging_status(session, job_id)
    if status is None:
        return None
    made = packaging_attempts(session, job_id)
    if made >= attempts:
        reason = f"packaging failed {made} times; the last one stopped answering (it died or hit its hard time limit)"
        fail_job(session, job_id, reason, actor=actor)
        return None
    reason = f"packaging attempt {made + 1} of {attempts}"
    if status == J.UPLOADING:  # the zip is built again from the start
        move_job(session, job_id, J.PACKAGING, reason=reason, actor=actor, only_from=[J.UPLOADING])
    else:
        _record(session, "job", job_id, job_id, status, J.PACKAGING, reason, actor)
        touch_job(session, job_id)
    return made + 1


def packaging_failed(session: Session, job_id: str, reason: str, *, attempts: int, actor: str | None) -> bool:
    """A packaging attempt ended without a zip: its reason is the job's error while the janitor resumes the job,
    and after the last attempt the job is FAILED with it. True if the job failed."""
    if _packaging_status(session, job_id) is None:
        return False
    made = packaging_attempts(session, job_id)
    if made >= attempts:
        return fail_job(session, job_id, f"packaging failed {made} times; last: {reason}", actor=actor)
    touch_job(session, job_id, error=f"packaging attempt {made} of {attempts} failed: {reason}")
    return False


# --- workers ---------------------------------------------------------------------------------------------------


def register_worker(
    session: Session, hostname: str, *, devices: list[Any], queues: list[str], pid: int, memory_bytes: int | None = None
) -> None:
    """A worker process came up: ONLINE unless an operator disabled it before."""
    worker = session.get(Worker, hostname, with_for_update=True)
    now = utcnow()
    if worker is None:
        session.add(
            Worker(
                hostname=hostname,
                status=WorkerStatus.ONLINE,
                devices=devices,
                queues=queues,
                pid=pid,
                memory_bytes=memory_bytes,
                started_at=now,
                last_heartbeat=db_now(),
            )
        )
        _record(session, "worker", hostname, None, None, WorkerStatus.ONLINE, "registered", hostname)
        return
    old = worker.status
    worker.devices, worker.queues, worker.pid, worker.memory_bytes = devices, queues, pid, memory_bytes
    worker.started_at, worker.last_heartbeat, worker.health = now, db_now(), None
    if old == WorkerStatus.OFFLINE:
        worker.status = WorkerStatus.ONLINE
        _record(session, "worker", hostname, None, old, WorkerStatus.ONLINE, "registered", hostname)


def heartbeat(session: Session, hostname: str, clock_offset: float | None = None) -> str | None:
    """A live worker checks in (on the database's clock, with how far its own clock is off); one that was marked
    OFFLINE (say, after a network split) comes back. Returns the worker's status, which the worker obeys (a
    DISABLED worker stops consuming)."""
    session.execute(
        update(Worker).where(Worker.hostname == hostname).values(last_heartbeat=db_now(), clock_offset=clock_offset)
    )
    if session.execute(
        update(Worker)
        .where(Worker.hostname == hostname, Worker.status == WorkerStatus.OFFLINE)
        .values(status=WorkerStatus.ONLINE)
    ).rowcount:
        _record(session, "worker", hostname, None, WorkerStatus.OFFLINE, WorkerStatus.ONLINE, "heartbeat", hostname)
    return session.execute(select(Worker.status).where(Worker.hostname == hostname)).scalar_one_or_none()


def worker_health(session: Session, hostname: str, health: str | None) -> bool:
    """Say why a worker is unwell (its disk is full), or that it is well again (None); an event when it changes."""
    worker = session.get(Worker, hostname, with_for_update=True)
    if worker is None or worker.health == health:
        return False
    reason = f"unwell: {health}" if health else f"well again (was: {worker.health})"
    worker.health = health
    _record(session, "worker", hostname, None, worker.status, worker.status, reason, hostname)
    return True


def worker_offline(session: Session, hostname: str, reason: str) -> bool:
    """Mark a worker OFFLINE (it shut down, or stopped heartbeating); a DISABLED worker stays DISABLED."""
    changed = session.execute(
        update(Worker)
        .where(Worker.hostname == hostname, Worker.status == WorkerStatus.ONLINE)
        .values(status=WorkerStatus.OFFLINE)
    ).rowcount
    if changed:
        _record(session, "worker", hostname, None, WorkerStatus.ONLINE, WorkerStatus.OFFLINE, reason, hostname)
    return bool(changed)


def set_worker_enabled(session: Session, hostname: str, enabled: bool, *, actor: str | None) -> None:
    """DISABLED: the worker finishes its chunk and takes no more work; enabling brings it back ONLINE."""
    worker = session.get(Worker, hostname, with_for_update=True)
    if worker is None:
        raise LookupError(hostname)
    new = WorkerStatus.ONLINE if enabled else WorkerStatus.DISABLED
    if worker.status != new:
        _record(session, "worker", hostname, None, worker.status, new, "enabled" if enabled else "disabled", actor)
        worker.status = new
