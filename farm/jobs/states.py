"""The one place where a job, chunk, frame or worker changes status.

A move reads the row's status with the row locked, checks it against the flow tables below, writes it with a
compare-and-set (so two processes racing cannot both win, on SQLite too), bumps the job's `version` (what live views
watch; a changed chunk is stamped with it, see `chunk_touched`) and writes an `Event` row saying what changed, from
what, why and by whom. Every statement is a named one in
`farm.jobs.statements`; an object of a changed row that the session holds is refreshed from the database.

Every time that says whether someone is alive (heartbeats, claims, dispatches, a job's last change) is the database
server's clock, never this machine's: staleness is judged by one clock, not by comparing two.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from farm.clock import aware
from farm.errors import IllegalTransition
from farm.jobs import statements as sql
from farm.models import Chunk, ChunkStatus, Frame, FrameStatus, Job, JobStatus, Worker, WorkerStatus, utcnow
from farm.webhooks import outbox

J, C, F, W = JobStatus, ChunkStatus, FrameStatus, WorkerStatus

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
WORKER_FLOW: dict[str, set[str]] = {
    W.ONLINE: {W.OFFLINE, W.DISABLED},
    W.OFFLINE: {W.ONLINE, W.DISABLED},
    W.DISABLED: {W.ONLINE},
}
ACTIVE_JOB = frozenset({J.QUEUED, J.RENDERING, J.PACKAGING, J.UPLOADING})
TERMINAL_JOB = frozenset(sql.TERMINAL_JOB)
PACKAGING_NOW = (J.PACKAGING, J.UPLOADING)


def _allowed(flow: dict[str, set[str]], old: str, new: str, only_from: Iterable[str] | None) -> bool:
    return new in flow[old] and (only_from is None or old in set(only_from))


def _refresh(session: Session, model: type, key: Any) -> None:
    """The session's object of a row a statement changed, if it holds one, reads the row again."""
    loaded = session.identity_map.get(identity_key(model, key))
    if loaded is not None:
        session.refresh(loaded)


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
    session.execute(
        sql.RECORD_EVENT,
        dict(
            kind=kind,
            subject=str(subject),
            job_id=job_id,
            old=old,
            new=new,
            reason=reason,
            actor=actor,
            created_at=utcnow(),
        ),
    )


# --- jobs ------------------------------------------------------------------------------------------------------


def touch_job(session: Session, job_id: str, **values: Any) -> str | None:
    """Tell watchers something about the job changed (setting the columns in `values` too); its status."""
    status = session.execute(sql.TOUCH_JOB, dict(values, job=job_id)).scalar()
    _refresh(session, Job, job_id)
    return status


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
    """Change a job's status (and the columns in `values`); False (or IllegalTransition when strict) if it is not
    allowed from where it is. A FAILED job's error is the reason, unless `values` says otherwise."""
    if new == J.FAILED:
        values.setdefault("error", reason)
    old = session.execute(sql.JOB_STATUS, {"job": job_id}).scalar()
    if old is None:
        raise LookupError(f"no job {job_id}")
    if not _allowed(JOB_FLOW, old, new, only_from):
        if strict and old != new:
            raise IllegalTransition("job", job_id, old, new)
        return False
    if session.execute(sql.MOVE_JOB, dict(values, job=job_id, old=old, new=new)).rowcount != 1:
        return False  # moved meanwhile (only where rows cannot be locked: SQLite)
    _refresh(session, Job, job_id)
    _record(session, "job", job_id, job_id, old, new, reason, actor)
    if new in TERMINAL_JOB:
        outbox.job_ended(session, job_id, new)  # webhooks: written now, sent once this transaction commits
    return True


def chunk_touched(session: Session, chunk_id: int, job_id: str, **job_values: Any) -> str | None:
    """Something a page shows about a chunk changed: touch its job (with `job_values`), then stamp the chunk with the
    job's new version, while this transaction holds the job's row. Stamps so grow in the order changes commit, and
    a live view reads only the chunks stamped past the last it saw (`webapp.live`). The job's status."""
    status = touch_job(session, job_id, **job_values)
    session.execute(sql.STAMP_CHUNK, {"chunk": chunk_id})
    return status


def job_created(session: Session, job: Job, *, reason: str, actor: str | None) -> None:
    """The first event of a job's trail (its status starts at QUEUED)."""
    _record(session, "job", job.id, job.id, None, job.status, reason, actor)


DELETED = "DELETED"  # not a status a job can have: the `new` of the one event that outlives a deleted job


def job_deleted(session: Session, job_id: str, *, reason: str, actor: str | None) -> str | None:
    """Mark a job deleted (users no longer see it) and record who did it; its status, or None if there is no such
    job. Cancel an active job first: this moves no status."""
    status = touch_job(session, job_id, deleted_at=utcnow())
    if status is not None:
        _record(session, "job", job_id, job_id, status, DELETED, reason, actor)
    return status


# --- chunks and frames, as workers see them --------------------------------------------------------------------


def move_chunk(
    session: Session,
    chunk: Chunk,
    new: ChunkStatus,
    *,
    reason: str | None = None,
    actor: str | None = None,
    only_from: Iterable[str] | None = None,
    attempt: int | None = None,
    job_values: dict[str, Any] | None = None,
    **values: Any,
) -> str | None:
    """Change a chunk's status (and the columns in `values`), only in `attempt` when given (a renderer that lost its
    claim never moves the chunk its successor renders), touching its job (with `job_values`); the job's status
    then, or None if the chunk could not move."""
    old, attempts = session.execute(sql.CHUNK_STATE, {"chunk": chunk.id}).one()
    if (attempt is not None and attempts != attempt) or not _allowed(CHUNK_FLOW, old, new, only_from):
        return None
    moved = session.execute(sql.MOVE_CHUNK, dict(values, chunk=chunk.id, old=old, attempt=attempts, new=new))
    if moved.rowcount != 1:
        return None
    _record(session, "chunk", f"{chunk.job_id}/{chunk.index}", chunk.job_id, old, new, reason, actor)
    status = chunk_touched(session, chunk.id, chunk.job_id, **(job_values or {}))  # the job's row as late as may be
    _refresh(session, Chunk, chunk.id)
    return status


def make_frame_rows(session: Session, job: Job, index: int) -> None:
    """The rows of the job's `index`th chunk's frames, those it lacks: made when a worker claims the chunk (or a
    probe's frame is kept), never up front. A split still's one frame row is its part 0's, whichever part asks."""
    owner = 0 if job.split > 1 else index
    session.execute(sql.CHUNK_FRAMES[session.connection().dialect.name], {"job": job.id, "index": owner})


def _move_frames(session: Session, chunk_id: int, among: Iterable[str], new: FrameStatus) -> list[int]:
    """Bulk change of a chunk's frames; the frame numbers moved."""
    return sorted(session.execute(sql.MOVE_FRAMES, {"chunk": chunk_id, "among": list(among), "new": new}).scalars())


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


def _take_over(session: Session, chunk: Chunk, worker: str, stale_before: datetime, claim: dict[str, Any]) -> bool:
    """A RENDERING chunk whose renderer stopped heartbeating changes hands (compare-and-set on its heartbeat)."""
    if chunk.heartbeat_at is None or aware(chunk.heartbeat_at) >= stale_before:
        return False
    if session.execute(sql.TAKE_OVER_CHUNK, dict(claim, chunk=chunk.id, seen_heartbeat=chunk.heartbeat_at)).rowcount:
        reason = f"taken over from {chunk.worker}, which stopped heartbeating"
        _record(
            session, "chunk", f"{chunk.job_id}/{chunk.index}", chunk.job_id, C.RENDERING, C.RENDERING, reason, worker
        )
        chunk_touched(session, chunk.id, chunk.job_id, worker_host=worker)
        return True
    return False


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
    same read found about `worker`, before anything is written, and raises to refuse the chunk."""
    found = session.execute(sql.CLAIMING, {"chunk": chunk_id, "worker": worker}).first()
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
        error=None,
        log_key=log_key(chunk, chunk.attempts + 1) if log_key else chunk.log_key,
        frame_progress=0.0,
    )
    stale = chunk.status == C.RENDERING and stale_after is not None
    if stale and _take_over(session, chunk, worker, aware(db_time) - stale_after, claim):
        session.refresh(chunk)
    elif not move_chunk(
        session,
        chunk,
        C.RENDERING,
        actor=worker,
        reason="claimed",
        only_from=[C.QUEUED],
        attempt=chunk.attempts,  # as read: nobody claimed it since
        job_values={"worker_host": worker},
        **claim,
    ):
        return None
    # After the job's row is held (the move above): made before, their foreign key's share lock on that row would
    # deadlock with a claim moving the job to RENDERING.
    make_frame_rows(session, job, chunk.index)
    frames = _move_frames(session, chunk.id, [F.QUEUED, F.FAILED, F.RENDERING], F.RENDERING)
    if job.status == J.QUEUED:
        move_job(session, job.id, J.RENDERING, actor=worker, reason="first chunk started", only_from=[J.QUEUED])
    return Claim(chunk=chunk, job=job, frames=frames)


def chunk_heartbeat(session: Session, chunk_id: int, worker: str, attempt: int) -> bool:
    """The renderer is alive; False means the chunk is no longer ours (taken back, or taken over: by another
    worker, or by this one again in a later attempt)."""
    beat = session.execute(sql.CHUNK_HEARTBEAT, {"chunk": chunk_id, "renderer": worker, "attempt": attempt})
    return bool(beat.rowcount)


def chunk_progress(
    session: Session, job_id: str, chunk_id: int, worker: str, attempt: int, frame_progress: float, progress: float
) -> bool:
    """The renderer's progress within its frame (0-1) and chunk (0-100), and a nudge to the job's live views; False
    if the chunk is no longer this attempt's (nothing is written then)."""
    where = {"chunk": chunk_id, "renderer": worker, "attempt": attempt}
    if not session.execute(sql.CHUNK_PROGRESS, dict(where, frame_progress=frame_progress, progress=progress)).rowcount:
        return False
    chunk_touched(session, chunk_id, job_id)
    return True


def part_done(session: Session, job_id: str, chunk_id: int, worker: str, attempt: int, part: dict[str, Any]) -> bool:
    """Record a split still's part, stored by `worker` in `attempt`; False if the chunk is no longer that attempt's
    (nothing is written then). One part per chunk: a later attempt's replaces an earlier one's, never adds to it."""
    where = {"chunk": chunk_id, "renderer": worker, "attempt": attempt}
    if not session.execute(sql.PART_DONE, dict(where, part=part)).rowcount:
        return False
    chunk_touched(session, chunk_id, job_id)
    _refresh(session, Chunk, chunk_id)
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
        attempt=chunk.attempts,
        task_id=task_id,
        worker=None,
    ):
        return False
    _move_frames(session, chunk.id, [F.RENDERING, F.FAILED], F.QUEUED)
    return True


def replace_task(session: Session, chunk_id: int, old_task_id: str | None, new_task_id: str) -> bool:
    """Swap a QUEUED chunk's lost task for a new one; compare-and-set, so two janitors never both re-send it."""
    replaced = session.execute(sql.REPLACE_TASK, {"chunk": chunk_id, "old_task": old_task_id, "new_task": new_task_id})
    return bool(replaced.rowcount)


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
    stored = dict(
        job=job_id,
        frame_number=frame,
        render_time_ms=render_time_ms,
        worker=worker,
        device=device,
        image_key=image_key,
        sha256=sha256,
        size=size,
        finished_at=utcnow(),
    )
    if attempt is None:
        done = session.execute(sql.FRAME_DONE, stored)
    else:
        done = session.execute(sql.FRAME_DONE_IN_CLAIM, dict(stored, renderer=worker, attempt=attempt))
    if done.rowcount != 1:
        return False
    _record(session, "frame", f"{job_id}/{frame}", job_id, F.RENDERING, F.DONE, f"{render_time_ms:.0f} ms", worker)
    dialect = session.connection().dialect.name
    session.execute(sql.TALLY_FRAME[dialect], {"renderer": worker})
    session.execute(sql.PACE_FRAME[dialect], {"job": job_id, "renderer": worker, "ms": render_time_ms})
    # The job's row last: every renderer of the job writes it, so this transaction holds it only until it commits.
    session.execute(sql.COUNT_FRAME, {"job": job_id, "ms": render_time_ms, "frame_number": frame})
    _refresh(session, Frame, (job_id, frame))
    _refresh(session, Job, job_id)
    return True


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
    from the chunks); the job's status, or None if the chunk was not rendering (in `attempt`, when given: a renderer
    that lost its claim never ends the chunk its successor renders). DONE means every frame was recorded DONE, so
    only the other endings move frames."""
    job_status = move_chunk(
        session,
        chunk,
        new,
        actor=worker,
        reason=reason,
        only_from=[C.RENDERING],
        attempt=attempt,
        error=reason if new == C.FAILED else None,
        log_key=log_key,
        frame_progress=0.0,
        **({"progress": 100.0} if new == C.DONE else {}),
    )
    if job_status is not None and new != C.DONE:
        _move_frames(session, chunk.id, [F.RENDERING], F.FAILED if new == C.FAILED else F.QUEUED)
    return job_status


def chunks_left(session: Session, job_id: str) -> int:
    """Chunks of a job not yet DONE."""
    return session.execute(sql.CHUNKS_LEFT, {"job": job_id}).scalar_one()


def chunks_pending(session: Session, job_id: str) -> tuple[bool, bool]:
    """Whether any chunk of the job is not DONE, and whether any is still QUEUED."""
    left, waiting = session.execute(sql.CHUNKS_PENDING, {"job": job_id}).one()
    return bool(left), bool(waiting)


def chunks_running(session: Session, job_id: str) -> int:
    return session.execute(sql.CHUNKS_RUNNING, {"job": job_id}).scalar_one()


def _chunks(session: Session, job_id: str, among: Iterable[str]) -> list[Chunk]:
    return list(session.scalars(sql.CHUNKS_OF_JOB, {"job": job_id, "among": list(among)}))


# --- jobs, as users and the packager see them ------------------------------------------------------------------


def _cancel_queued(session: Session, job_id: str, *, reason: str, actor: str | None) -> None:
    """Every QUEUED chunk of a job just moved (its row held) becomes CANCELED, with an event each, as `move_chunk`
    would do one by one: one UPDATE and one batched INSERT however many there are (10,000 chunks: a cancel took 33 s
    one by one)."""
    moved = session.execute(sql.CANCEL_QUEUED, {"job": job_id}).all()
    if not moved:
        return
    at = utcnow()
    events = [
        dict(
            kind="chunk",
            subject=f"{job_id}/{index}",
            job_id=job_id,
            old=C.QUEUED,
            new=C.CANCELED,
            reason=reason,
            actor=actor,
            created_at=at,
        )
        for _, index in sorted(moved, key=lambda row: row.index)
    ]
    session.execute(sql.RECORD_EVENT, events)
    for chunk_id, _ in moved:
        _refresh(session, Chunk, chunk_id)


def cancel_job(session: Session, job_id: str, *, actor: str | None) -> None:
    """Stop a job: queued chunks are canceled now; with chunks still rendering it waits in CANCELING."""
    target = J.CANCELING if chunks_running(session, job_id) else J.CANCELED
    move_job(session, job_id, target, reason="canceled by user", actor=actor, strict=True)
    _cancel_queued(session, job_id, reason="job canceled", actor=actor)


def settle_cancel(session: Session, job_id: str, *, actor: str | None) -> bool:
    """CANCELING becomes CANCELED once no chunk of the job is rendering."""
    if chunks_running(session, job_id):
        return False
    return move_job(session, job_id, J.CANCELED, reason="no chunk left running", actor=actor, only_from=[J.CANCELING])


def fail_job(session: Session, job_id: str, reason: str, *, actor: str | None) -> bool:
    """Fail an active job and stop its queued chunks; frames already rendered are kept."""
    if not move_job(session, job_id, J.FAILED, reason=reason, actor=actor, only_from=ACTIVE_JOB):
        return False
    _cancel_queued(session, job_id, reason="job failed", actor=actor)
    return True


_CULPRIT = re.compile(r"Dependency (\S+) raised")


def fail_job_for_chord(session: Session, job_id: str, reason: str, *, actor: str | None) -> bool:
    """Fail a job whose chord reported a crashed render task, unless the report is stale: tasks revoked by a cancel
    (already recorded), or a task that no longer renders its chunk — a canceled run's chord may report after the
    user's retry has sent new tasks, and must not fail the new run."""
    if "TaskRevokedError" in reason:
        return False
    culprit = _CULPRIT.search(reason)
    if culprit:  # the task's chunk now: fair share may have traded the task to another job's chunk
        chunk = session.scalar(sql.CHUNK_BY_TASK, {"task": culprit.group(1)})
        if chunk is None or chunk.status not in (C.QUEUED, C.RENDERING):
            return False
        job_id = chunk.job_id
    return fail_job(session, job_id, reason, actor=actor)


def retry_job(session: Session, job_id: str, *, actor: str | None) -> list[int]:
    """Re-queue a FAILED or CANCELED job's unfinished chunks; returns their ids for dispatch."""
    move_job(session, job_id, J.QUEUED, reason="retried", actor=actor, strict=True, error=None)
    ids = []
    for chunk in _chunks(session, job_id, sql.UNFINISHED_CHUNK):
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


def packaging_attempts(session: Session, job_id: str) -> int:
    """Packaging attempts the job has had since it was last (re)queued. Each begins with an event into PACKAGING
    (the first moves the job there, a resumed one records it again), so the count holds however often the janitor
    or the broker sends packaging again, and a user's retry starts afresh."""
    return session.execute(sql.PACKAGING_ATTEMPTS, {"job": job_id}).scalar_one()


def _packaging_status(session: Session, job_id: str) -> str | None:
    """The job's status, its row locked, if a packager has it; else None."""
    status = session.execute(sql.JOB_STATUS, {"job": job_id}).scalar()
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


def _move_worker(session: Session, hostname: str, old: str, new: str, reason: str, actor: str | None) -> bool:
    """Compare-and-set a worker's status from `old` to `new`, with its event."""
    if not _allowed(WORKER_FLOW, old, new, None):
        return False
    if not session.execute(sql.MOVE_WORKER, {"host": hostname, "old": old, "new": new}).rowcount:
        return False
    _refresh(session, Worker, hostname)
    _record(session, "worker", hostname, None, old, new, reason, actor)
    return True


def register_worker(
    session: Session, hostname: str, *, devices: list[Any], queues: list[str], pid: int, memory_bytes: int | None = None
) -> None:
    """A worker process came up: ONLINE unless an operator disabled it before."""
    found = session.execute(sql.WORKER_STATUS_LOCKED, {"host": hostname}).first()
    if found is None:
        session.add(
            Worker(
                hostname=hostname,
                status=W.ONLINE,
                devices=devices,
                queues=queues,
                pid=pid,
                memory_bytes=memory_bytes,
                started_at=utcnow(),
            )
        )
        session.flush()
        session.execute(sql.WORKER_HEARTBEAT, {"host": hostname, "offset": None})
        _record(session, "worker", hostname, None, None, W.ONLINE, "registered", hostname)
        return
    what = dict(host=hostname, devices=devices, queues=queues, pid=pid, memory_bytes=memory_bytes)
    session.execute(sql.WORKER_REGISTERED, what)
    _refresh(session, Worker, hostname)
    if found.status == W.OFFLINE:
        _move_worker(session, hostname, W.OFFLINE, W.ONLINE, "registered", hostname)


def heartbeat(session: Session, hostname: str, clock_offset: float | None = None) -> str | None:
    """A live worker checks in (on the database's clock, with how far its own clock is off); one that was marked
    OFFLINE (say, after a network split) comes back. Returns the worker's status, which the worker obeys (a
    DISABLED worker stops consuming)."""
    session.execute(sql.WORKER_HEARTBEAT, {"host": hostname, "offset": clock_offset})
    _move_worker(session, hostname, W.OFFLINE, W.ONLINE, "heartbeat", hostname)
    found = session.execute(sql.WORKER_STATUS, {"host": hostname}).first()
    return found.status if found else None


def worker_health(session: Session, hostname: str, health: str | None) -> bool:
    """Say why a worker is unwell (its disk is full), or that it is well again (None); an event when it changes."""
    found = session.execute(sql.WORKER_STATUS_LOCKED, {"host": hostname}).first()
    if found is None or found.health == health:
        return False
    reason = f"unwell: {health}" if health else f"well again (was: {found.health})"
    session.execute(sql.WORKER_HEALTH, {"host": hostname, "why": health})
    _refresh(session, Worker, hostname)
    _record(session, "worker", hostname, None, found.status, found.status, reason, hostname)
    return True


def worker_offline(session: Session, hostname: str, reason: str) -> bool:
    """Mark a worker OFFLINE (it shut down, or stopped heartbeating); a DISABLED worker stays DISABLED."""
    return _move_worker(session, hostname, W.ONLINE, W.OFFLINE, reason, hostname)


def set_worker_enabled(session: Session, hostname: str, enabled: bool, *, actor: str | None) -> None:
    """DISABLED: the worker finishes its chunk and takes no more work; enabling brings it back ONLINE."""
    found = session.execute(sql.WORKER_STATUS_LOCKED, {"host": hostname}).first()
    if found is None:
        raise LookupError(hostname)
    new = W.ONLINE if enabled else W.DISABLED
    if found.status != new:
        _move_worker(session, hostname, found.status, new, "enabled" if enabled else "disabled", actor)
