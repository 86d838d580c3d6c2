"""Orchestration benchmark: a 2,000-task job on the farm with the null renderer (FARM_RENDERER=null-benchmark-only:
everything but Blender — claim, frame store and records, chunk end, the chord) against a bare Celery chord of
2,000 no-op tasks with the farm's own Celery configuration on the same Redis and Postgres. Goal: tasks/s ratio
≥ 0.7. Then the submission of a 10,000-frame job: time to plan it, write its rows and dispatch its chord, and how
many database rows it takes (goal < 2 s).

    python -m bench.orchestration [--tasks 2000] [--big 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
from celery import chord
from sqlalchemy import func, select

from bench.common import REDIS, make_scene, median, report, services
from farm.blender.launcher import probe_scene
from farm.config import load_settings
from farm.db import Database
from farm.models import Chunk, Event, Frame
from tests.helpers import FarmProcesses, submit, wait_for_status, wait_until


def bare_chord(env: dict[str, str], tasks: int, logs: Path) -> tuple[float, float]:
    """(dispatch seconds, dispatch-to-callback seconds) for a chord of no-op tasks on a bare worker."""
    queue = env["FARM_QUEUE"] + "-bare"
    os.environ.update(env)
    from bench import bare_celery

    worker_env = dict(os.environ, **env)
    with open(logs / "bare-worker.log", "wb") as log:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bench.bare_celery",
                "worker",
                "-Q",
                queue,
                "-c",
                "1",
                "--without-gossip",
                "--without-mingle",
            ],
            env=worker_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        app = bare_celery.app
        app.control.ping(timeout=1)
        wait_until(lambda: app.control.ping(destination=None, timeout=0.5), timeout=60, what="the bare worker")
        key = f"bench-done-{queue}-{uuid.uuid4().hex}"  # a run of its own
        started = time.perf_counter()
        header = [bare_celery.noop.si(i).set(queue=queue) for i in range(tasks)]
        chord(header, bare_celery.done.s(key).set(queue=queue)).apply_async()
        dispatched = time.perf_counter()
        dispatched_at = time.time()
        client = redis.Redis.from_url(REDIS)
        finished = wait_until(lambda: client.get(key), timeout=1800, what="the bare chord", interval=0.05)
        client.close()
        return dispatched - started, float(finished) - dispatched_at
    finally:
        worker.terminate()
        worker.wait(60)


def rows_of(db: Database, job_id: str) -> dict[str, int]:
    with db.session() as session:
        return {
            "jobs": 1,
            "chunks": session.scalar(select(func.count()).select_from(Chunk).where(Chunk.job_id == job_id)) or 0,
            "frames": session.scalar(select(func.count()).select_from(Frame).where(Frame.job_id == job_id)) or 0,
            "events": session.scalar(select(func.count()).select_from(Event).where(Event.job_id == job_id)) or 0,
        }


def packaging_started(db: Database, job_id: str) -> float | None:
    with db.session() as session:
        at = session.scalar(
            select(func.min(Event.created_at)).where(
                Event.job_id == job_id, Event.kind == "job", Event.new == "PACKAGING"
            )
        )
        return at.timestamp() if at else None


def farm_job(procs: FarmProcesses, db: Database, blend: Path, tasks: int) -> float:
    """Seconds from a job of `tasks` one-frame chunks being accepted to its move to PACKAGING. Waited for as the
    bare run's end is, with a cheap read every 50 ms (one indexed row): asking the web app for the job, as users
    would, costs its process CPU that the worker shares on a small machine, and the bare run has no web app."""
    response = submit(procs.url, blend, name="orchestration", frame_start=1, frame_end=tasks, chunk_size=1)
    returned = time.time()
    response.raise_for_status()
    job_id = response.json()["job"]["id"]
    packaging = wait_until(lambda: packaging_started(db, job_id), timeout=3600, what="packaging", interval=0.05)
    assert wait_for_status(procs.url, job_id, {"COMPLETED", "FAILED"}, timeout=3600)["status"] == "COMPLETED"
    return packaging - returned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--big", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3, help="bare and farm runs, taken in turn")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-orch-") as tmp_name:
        tmp = Path(tmp_name)
        extra = {"FARM_RENDERER": "null-benchmark-only", "FARM_STORAGE_URL": (tmp / "storage").as_uri()}
        with services(tmp, **extra) as env:
            blend = make_scene(env, tmp / "scene.blend", frames=args.big, width=64, height=36, samples=1)
            procs = FarmProcesses(env, tmp)
            db = Database(env["FARM_DATABASE_URL"])
            rounds = []  # (bare dispatch s, bare run s, farm run s): in turn, so a drift in the VM's speed hits both
            try:
                procs.start_web()
                for _ in range(args.rounds):
                    bare_dispatch, bare_run = bare_chord(env, args.tasks, tmp)
                    procs.start_worker("null")
                    rounds.append((bare_dispatch, bare_run, farm_job(procs, db, blend, args.tasks)))
                    procs.stop("worker-null")  # the big jobs below are planned and dispatched, not rendered

                settings = load_settings(env, dotenv_path=None)
                probe = median([_timed(lambda: probe_scene(settings, blend)) for _ in range(3)])
                big = {}
                for label, fields in (("chunk_size 1", {"chunk_size": 1}), ("adaptive", {})):
                    started = time.perf_counter()
                    response = submit(procs.url, blend, name="big", frame_start=1, frame_end=args.big, **fields)
                    elapsed = time.perf_counter() - started
                    response.raise_for_status()
                    big[label] = (elapsed, rows_of(db, response.json()["job"]["id"]))
            finally:
                procs.stop_all()
                db.engine.dispose()
    rows = []
    for n, (bare_dispatch, bare_run, farm_run) in enumerate(rounds, 1):
        bare_rate, farm_rate = args.tasks / bare_run, args.tasks / farm_run
        rows += [
            [f"round {n}: bare Celery chord, {args.tasks} no-op tasks", f"{bare_run:.1f}", f"{bare_rate:.0f}", "1.00",
             f"{bare_dispatch:.2f}"],
            [f"round {n}: farm, {args.tasks} chunks, null renderer", f"{farm_run:.1f}", f"{farm_rate:.0f}",
             f"{bare_run / farm_run:.2f}", "-"],
        ]  # fmt: skip
    ratio = median([bare_run / farm_run for _, bare_run, farm_run in rounds])
    rows.append([f"median of {len(rounds)} rounds", "-", "-", f"{ratio:.2f}", "-"])
    for label, (elapsed, counts) in big.items():
        total = sum(counts.values())
        rows.append(
            [
                f"submit {args.big} frames, {label}: {counts['chunks']} chunks, {total} rows "
                f"({counts['frames']} frames, {counts['events']} events)",
                f"{elapsed:.2f}",
                "-",
                "-",
                f"{elapsed - probe:.2f} (minus the {probe:.2f} s scene probe)",
            ]
        )
    report(
        "orchestration",
        "Orchestration: the farm's cost per task against bare Celery",
        ["run", "seconds", "tasks/s", "ratio", "dispatch s"],
        rows,
        notes="""Both on one worker process (concurrency 1) on the same Redis and Postgres (results backend too), one
after the other in each round: a bare run's speed swings by up to 2x between runs minutes apart on a VM, so
compare each farm run with the bare run just before it, and read the median.
Run time: chord dispatched → last task done (bare: its callback ran; farm: the job moved to PACKAGING).
The farm's tasks claim the chunk in Postgres, store a 1×1 PNG (file:// storage, so S3 is not what is measured),
record the frame and end the chunk. The big-job rows are a plain HTTP submission; "dispatch s" there is the
whole request minus a scene probe timed alone (the adaptive request also renders its probe frame).""",
    )


def _timed(action) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
