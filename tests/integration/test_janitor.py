"""The janitor and the retry placement against the real Postgres and Redis: rows are put in the states that faults
leave behind, then one sweep must repair each exactly once — also with two janitors sweeping at the same moment."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from datetime import timedelta

import pytest
import redis
from sqlalchemy import select, update

from farm.celery_app import make_celery
from farm.db import Database
from farm.jobs import states
from farm.jobs.scheduling import place_chunk
from farm.messaging.broker import janitor_turn, pending_task_ids, queue_names
from farm.messaging.dispatch import assign_task_ids, send_render
from farm.messaging.janitor import Janitor
from farm.models import Chunk, ChunkStatus, Job, JobStatus, Worker, WorkerStatus, utcnow
from tests.conftest import RUN_ID
from tests.helpers import free_port, wait_until
from tests.rows import add_job


@pytest.fixture()
def settings(prod_settings):
    return dataclasses.replace(
        prod_settings,
        queue=f"janitor-{RUN_ID}-{uuid.uuid4().hex[:6]}",
        worker_timeout_seconds=5.0,
        chunk_attempts=3,
        blocklist_failures=2,
    )


@pytest.fixture()
def celery(settings):
    return make_celery(settings)


@pytest.fixture()
def janitor(database, celery, settings):
    return Janitor(database, celery, settings, name="janitor@test")


def long_ago():
    return utcnow() - timedelta(minutes=5)


def add_worker(database, name, *, queues, status=WorkerStatus.ONLINE, beat=None):
    with database.session() as session:
        states.register_worker(session, name, devices=["CPU"], queues=queues, pid=1)
        session.execute(
            update(Worker).where(Worker.hostname == name).values(status=status, last_heartbeat=beat or utcnow())
        )
    return name


def new_job(database, queue, frames=4, chunk_size=2):
    with database.session() as session:
        job_id = add_job(session, frames, chunk_size, queue=queue)
        ids = list(session.scalars(select(Chunk.id).where(Chunk.job_id == job_id).order_by(Chunk.index)))
        assign_task_ids(session, ids)
        return job_id, ids


def chunk(database, chunk_id):
    with database.session() as session:
        return session.get(Chunk, chunk_id)


def test_silent_workers_go_offline(database, janitor, settings):
    quiet = add_worker(database, f"quiet-{uuid.uuid4().hex[:6]}@t", queues=[settings.queue], beat=long_ago())
    alive = add_worker(database, f"alive-{uuid.uuid4().hex[:6]}@t", queues=[settings.queue])
    done = janitor.sweep()
    assert quiet in done.workers_offline and alive not in done.workers_offline
    with database.session() as session:
        assert session.get(Worker, quiet).status == WorkerStatus.OFFLINE
        assert session.get(Worker, alive).status == WorkerStatus.ONLINE


def test_silent_chunk_is_requeued_and_sent_again(database, celery, janitor, settings):
    _, (first, _) = new_job(database, settings.queue)
    with database.session() as session:
        states.claim_chunk(session, first, "dead@t", "t1")
        session.execute(update(Chunk).where(Chunk.id == first).values(heartbeat_at=long_ago()))
    done = janitor.sweep()
    assert first in done.chunks_requeued
    again = chunk(database, first)
    assert again.status == ChunkStatus.QUEUED and again.task_id != "t1"
    assert again.task_id in pending_task_ids(settings, [settings.queue])  # really on the broker
    assert celery.AsyncResult("t1").state == "SUCCESS"  # retired, so the job's chord does not wait on it forever
    assert not janitor.sweep().chunks_requeued  # nothing left to do


def test_silent_chunk_after_the_retry_limit_fails_the_job(database, janitor, settings):
    job_id, (first, _) = new_job(database, settings.queue)
    with database.session() as session:
        states.claim_chunk(session, first, "dead@t", "t1")
        session.execute(update(Chunk).where(Chunk.id == first).values(heartbeat_at=long_ago(), attempts=3))
    done = janitor.sweep()
    assert job_id in done.jobs_failed
    with database.session() as session:
        job = session.get(Job, job_id)
        assert job.status == JobStatus.FAILED
        assert "failed 3 times" in job.error and "dead@t stopped heartbeating" in job.error


def test_lost_tasks_are_sent_again_but_waiting_ones_are_not(database, celery, janitor, settings):
    job_id, (lost, waiting) = new_job(database, settings.queue)
    waiting_task = chunk(database, waiting).task_id
    send_render(celery, job_id, waiting, waiting_task, queue=settings.queue, priority=0)  # still in the broker
    with database.session() as session:
        session.execute(update(Chunk).where(Chunk.job_id == job_id).values(dispatched_at=long_ago()))
    done = janitor.sweep()
    assert done.chunks_redispatched == [lost]
    assert chunk(database, waiting).task_id == waiting_task
    held = pending_task_ids(settings, [settings.queue])
    assert chunk(database, lost).task_id in held and waiting_task in held


def test_a_task_taken_by_a_worker_that_died_before_claiming_is_sent_again(database, celery, janitor, settings):
    """A worker killed between receiving a task and claiming its chunk leaves the message in Redis' unacked set
    until the visibility timeout (hours): held longer than the worker timeout, it counts as lost; just taken, not."""
    job_id, (orphaned, fresh) = new_job(database, settings.queue)
    tasks = {c: chunk(database, c).task_id for c in (orphaned, fresh)}
    with celery.connection_for_read() as conn:
        channel = conn.default_channel
        for c in (orphaned, fresh):
            send_render(celery, job_id, c, tasks[c], queue=settings.queue, priority=0)
        taken = [channel.basic_get(settings.queue, no_ack=False) for _ in range(2)]  # delivered, never acked
        client = redis.Redis.from_url(settings.broker_url)
        tags = {m.headers["id"]: m.delivery_tag for m in taken}
        client.zadd("unacked_index", {tags[tasks[orphaned]]: time.time() - 60})  # its taker died a minute ago
        with database.session() as session:
            session.execute(update(Chunk).where(Chunk.job_id == job_id).values(dispatched_at=long_ago()))
        done = janitor.sweep()
        assert orphaned in done.chunks_redispatched and fresh not in done.chunks_redispatched
        assert chunk(database, orphaned).task_id != tasks[orphaned] and chunk(database, fresh).task_id == tasks[fresh]
        for message in taken:
            message.ack()


@pytest.mark.commits  # threads race on their own connections: the real database
def test_two_janitors_at_once_send_a_lost_task_once(database, celery, settings):
    job_id, ids = new_job(database, settings.queue, frames=8, chunk_size=1)
    with database.session() as session:
        session.execute(update(Chunk).where(Chunk.job_id == job_id).values(dispatched_at=long_ago()))
    janitors = [Janitor(database, celery, settings, name=f"janitor-{i}@test") for i in range(2)]
    results = []
    barrier = threading.Barrier(2)

    def sweep(j):
        barrier.wait()
        results.append(j.sweep().chunks_redispatched)

    threads = [threading.Thread(target=sweep, args=(j,)) for j in janitors]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    mine = sorted(c for c in results[0] + results[1] if c in ids)  # (other tests' jobs share the database)
    assert mine == sorted(ids)  # each chunk re-sent by exactly one of them
    with database.session() as session:
        sent = set(session.scalars(select(Chunk.task_id).where(Chunk.job_id == job_id)))
    assert sent <= pending_task_ids(settings, [settings.queue])


def test_finished_but_unpackaged_jobs_are_packaged(database, janitor, settings):
    job_id, ids = new_job(database, settings.queue, frames=2, chunk_size=1)
    with database.session() as session:
        for chunk_id, frame in zip(ids, (1, 2), strict=True):
            c = states.claim_chunk(session, chunk_id, "w@t", None).chunk
            states.frame_done(
                session,
                job_id,
                frame,
                worker="w@t",
                render_time_ms=1,
                device="CPU",
                image_key="k",
                sha256="0" * 64,
                size=1,
            )
            states.finish_chunk(session, c, ChunkStatus.DONE, worker="w@t")
        session.execute(update(Job).where(Job.id == job_id).values(updated_at=long_ago()))
    assert janitor.sweep().jobs_packaged == [job_id]
    assert janitor.sweep().jobs_packaged == []  # touched: it waits before sending again


def test_a_split_still_whose_parts_are_done_is_packaged_though_its_frame_is_not_yet(database, janitor, settings):
    job_id, ids = new_job(database, settings.queue, frames=1, chunk_size=1)
    with database.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(split=1))
        c = states.claim_chunk(session, ids[0], "w@t", None).chunk
        states.finish_chunk(session, c, ChunkStatus.DONE, worker="w@t")  # the part: its frame waits for the merge
        session.execute(update(Job).where(Job.id == job_id).values(updated_at=long_ago()))
    assert janitor.sweep().jobs_packaged == []  # a job of frames waits for its frames
    with database.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(split=2, updated_at=long_ago()))
    assert janitor.sweep().jobs_packaged == [job_id]


def test_canceling_job_with_nothing_running_is_settled(database, janitor, settings):
    job_id, (first, _) = new_job(database, settings.queue)
    with database.session() as session:
        states.claim_chunk(session, first, "dead@t", None)
        states.cancel_job(session, job_id, actor="user")
        session.execute(update(Chunk).where(Chunk.id == first).values(heartbeat_at=long_ago()))
    done = janitor.sweep()
    assert first in done.chunks_abandoned and job_id in done.jobs_settled
    with database.session() as session:
        assert session.get(Job, job_id).status == JobStatus.CANCELED


def test_queue_names_include_each_workers_own_queue(settings):
    assert queue_names(settings.queue, ["a@h"]) == [settings.queue, "a@h.dq2"]


def fail_chunk(database, chunk_id, worker):
    with database.session() as session:
        c = states.claim_chunk(session, chunk_id, worker, None).chunk
        states.finish_chunk(session, c, ChunkStatus.FAILED, worker=worker, reason="boom")
        states.requeue_chunk(session, c, task_id=str(uuid.uuid4()), reason="retry", actor=worker)


def test_placement_prefers_a_worker_that_has_not_failed_the_chunk(database, settings):
    a = add_worker(database, f"a-{uuid.uuid4().hex[:6]}@t", queues=[settings.queue])
    b = add_worker(database, f"b-{uuid.uuid4().hex[:6]}@t", queues=[settings.queue])
    add_worker(database, f"other-queue-{uuid.uuid4().hex[:6]}@t", queues=["elsewhere"])
    job_id, (first, second) = new_job(database, settings.queue)
    fail_chunk(database, first, a)
    with database.session() as session:
        assert place_chunk(session, job_id, 0, queue=settings.queue, settings=settings, asking=a).worker == b
    fail_chunk(database, first, b)  # now both failed chunk 0 once: anyone may retry it from the shared queue
    with database.session() as session:
        placement = place_chunk(session, job_id, 0, queue=settings.queue, settings=settings, asking=b)
        assert placement.worker is None and placement.refused is None
    fail_chunk(database, second, a)  # a failed 2 chunks: blocklisted (threshold 2), so it passes work to b
    with database.session() as session:
        assert place_chunk(session, job_id, 1, queue=settings.queue, settings=settings, asking=a).worker == b
    fail_chunk(database, second, b)  # b too: nobody left
    with database.session() as session:
        placement = place_chunk(session, job_id, 1, queue=settings.queue, settings=settings, asking=b)
        assert placement.refused and "failed 2 chunks" in placement.refused
        for status in (JobStatus.FAILED, JobStatus.QUEUED):  # a user's retry wipes the blocklist
            states.move_job(session, job_id, status)
    with database.session() as session:
        assert place_chunk(session, job_id, 1, queue=settings.queue, settings=settings, asking=b).worker == a


def test_after_an_out_of_memory_kill_the_retry_prefers_a_worker_with_more_memory(database, settings):
    gib = 2**30
    sizes = {"small": 8 * gib, "big": 64 * gib, "mid": 32 * gib}
    names = {k: add_worker(database, f"{k}-{uuid.uuid4().hex[:6]}@t", queues=[settings.queue]) for k in sizes}
    with database.session() as session:
        for kind, name in names.items():
            session.execute(update(Worker).where(Worker.hostname == name).values(memory_bytes=sizes[kind]))
    job_id, (first, _) = new_job(database, settings.queue)
    fail_chunk(database, first, names["mid"])
    with database.session() as session:
        place = dict(queue=settings.queue, settings=settings, asking=names["mid"])
        assert place_chunk(session, job_id, 0, more_memory=True, **place).worker == names["big"]
        least_busy_first = min((names["big"], names["small"]))  # without the hint: the least busy, then by name
        assert place_chunk(session, job_id, 0, **place).worker == least_busy_first
        asking_big = dict(place, asking=names["big"])  # nobody has more than the biggest: placed as usual (mid
        assert place_chunk(session, job_id, 0, more_memory=True, **asking_big).worker == names["small"]  # failed it)


def test_janitors_of_one_farm_take_turns(settings):
    assert janitor_turn(settings, "janitor@a", 0.5)
    assert not janitor_turn(settings, "janitor@b", 0.5)  # a's turn holds for 0.5 s
    other_farm = dataclasses.replace(settings, queue=f"{settings.queue}-other")
    assert janitor_turn(other_farm, "janitor@c", 0.5)  # another farm on the same Redis is not held back
    wait_until(lambda: janitor_turn(settings, "janitor@b", 0.5), timeout=10, what="a's turn to lapse")


@pytest.mark.commits  # four threads, each reading the database's clock on its own connection before its turn
def test_many_janitors_sweep_about_as_often_as_one(database, celery, settings):
    """Four janitors, each looking every 0.2 s, sweep at most once per turn (0.18 s), not four times as often."""
    settings = dataclasses.replace(settings, janitor_seconds=0.2)
    sweeps: list[str] = []

    class Counted(Janitor):
        def sweep(self, *, storage_apart: bool = False):  # type: ignore[override]
            sweeps.append(self.name)

    stop = threading.Event()
    threads = [
        threading.Thread(target=Counted(database, celery, settings, name=f"janitor@{i}").run, args=(stop,))
        for i in range(4)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    wait_until(lambda: len(sweeps) >= 8, timeout=30, what="eight sweeps")
    stop.set()
    for thread in threads:
        thread.join(10)
    elapsed = time.monotonic() - started
    assert len(sweeps) <= elapsed / 0.18 + 1, (len(sweeps), elapsed)


def test_a_janitor_cut_off_from_the_database_takes_no_turn(celery, settings):
    """Turns go to janitors that can sweep: one whose database is away would take every turn and sweep nothing."""
    settings = dataclasses.replace(settings, janitor_seconds=0.05, queue=f"cut-{uuid.uuid4().hex[:8]}")
    cut = Janitor(Database(f"postgresql://postgres@127.0.0.1:{free_port()}/none", keep=0), celery, settings, "cut@t")
    stop = threading.Event()
    thread = threading.Thread(target=cut.run, args=(stop,))
    thread.start()
    holders = set()
    for _ in range(25):  # about ten looks
        holders.add(redis.Redis.from_url(settings.broker_url).get(f"farm-janitor:{settings.queue}"))
        time.sleep(0.02)
    stop.set()
    thread.join(10)
    assert holders == {None}  # the turn stayed free for a janitor that can sweep
