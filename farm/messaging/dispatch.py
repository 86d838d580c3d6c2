"""Send a job's chunks to the broker as one Celery chord: render every chunk, then package the job.

Every send follows a database change and must wait for its commit, so a worker never receives a chunk the database
does not know and a rolled-back change sends nothing: callers hand their sends to `after_commit`. Tasks are sent by
name: this module must not import worker code.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

from celery import Celery, chord
from celery.utils import worker_direct
from sqlalchemy import bindparam, event, update
from sqlalchemy.orm import Session

from farm.blender.devices import is_preview_queue
from farm.clock import db_now
from farm.models import Chunk

RENDER_CHUNK = "farm.render_chunk"
PACKAGE_JOB = "farm.package_job"
CHORD_FAILED = "farm.chord_failed"
# How often Celery's chord_unlock checks the header, which on a database result backend is one query per task and
# takes a worker slot while it runs. The last chunk to end sends the packaging itself, so the chord is the backstop
# (and carries the error callback): polling it every second, Celery's default, would only take slots from renders.
CHORD_CHECK_SECONDS = 15


_SENDS = "farm.sends_after_commit"


def after_commit(session: Session, send: Callable[[], None]) -> None:
    """Run `send` (a message to the broker) once the session's transaction commits, and never if it rolls back: the
    one way a task follows a database change. Sends run in the order given."""
    session.info.setdefault(_SENDS, []).append(send)


@event.listens_for(Session, "after_commit")
def _send_committed(session: Session) -> None:
    for send in session.info.pop(_SENDS, []):
        send()


@event.listens_for(Session, "after_rollback")
def _drop_rolled_back(session: Session) -> None:
    session.info.pop(_SENDS, None)


def broker_priority(priority: int, queue: str) -> int:
    """A job's priority (0-9, higher first) as Redis' priority queues take it: kombu pops step 0 first. A preview
    job's tasks always take step 0: kombu asks for step 0 of every queue before step 1 of any, so only then does a
    worker (which lists its preview queues first) serve previews before everything else."""
    if is_preview_queue(queue):
        return 0
    return 9 - max(0, min(9, priority))


def assign_task_ids(session: Session, chunk_ids: Sequence[int]) -> dict[int, str]:
    """Give each chunk the id of the task that will render it, recorded before anything is sent."""
    task_ids = {cid: new_task_id() for cid in chunk_ids}
    if task_ids:  # one executemany UPDATE by primary key (not a round trip per chunk), on the database's clock
        session.connection().execute(_ASSIGN, [{"cid": c, "tid": t} for c, t in task_ids.items()])
    return task_ids


_ASSIGN = (
    update(Chunk.__table__)
    .where(Chunk.__table__.c.id == bindparam("cid"))
    .values(task_id=bindparam("tid"), dispatched_at=db_now())
)


def new_task_id() -> str:
    return str(uuid.uuid4())


def send_chord(celery: Celery, job_id: str, task_ids: dict[int, str], *, priority: int, queue: str) -> str:
    """Dispatch the render tasks and the packaging callback; returns the chord's id."""
    header = [
        celery.signature(
            RENDER_CHUNK, args=(job_id, cid), task_id=tid, queue=queue, priority=broker_priority(priority, queue)
        )
        for cid, tid in task_ids.items()
    ]
    body = celery.signature(
        PACKAGE_JOB, args=(job_id,), immutable=True, queue=queue, priority=broker_priority(priority, queue)
    )
    body.on_error(celery.signature(CHORD_FAILED, kwargs={"job_id": job_id}, queue=queue))
    return chord(header, body).apply_async(interval=CHORD_CHECK_SECONDS).id


def set_worker_consuming(celery: Celery, hostname: str, queues: Sequence[str], consuming: bool) -> None:
    """Ask one worker, through the broker (its consumer thread acts on it), to start or stop taking work."""
    for queue in queues:
        if consuming:
            celery.control.add_consumer(queue, destination=[hostname])
        else:
            celery.control.cancel_consumer(queue, destination=[hostname])


def send_render(
    celery: Celery, job_id: str, chunk_id: int, task_id: str, *, queue: str, priority: int, worker: str | None = None
) -> None:
    """One render task outside the chord (a retry, or a re-dispatch): to the shared queue, or to one worker's own
    queue when the scheduler picked it."""
    target = worker_direct(worker) if worker else queue
    celery.send_task(
        RENDER_CHUNK, args=(job_id, chunk_id), task_id=task_id, queue=target, priority=broker_priority(priority, queue)
    )


def retire_tasks(celery: Celery, task_ids: Sequence[str]) -> None:
    """Mark tasks that were replaced (their message lost, their worker dead) as finished in the result backend, so
    the chord waiting on them fires instead of polling for them forever. The database already knows the truth."""
    for task_id in task_ids:
        celery.backend.store_result(task_id, "superseded", "SUCCESS")


def send_packaging(celery: Celery, job_id: str, *, queue: str, resume: bool = False) -> None:
    """Package outside the chord: the last chunk saw every frame done, or the janitor found packaging stalled."""
    celery.send_task(
        PACKAGE_JOB, args=(job_id,), kwargs={"resume": resume}, queue=queue, priority=broker_priority(9, queue)
    )
