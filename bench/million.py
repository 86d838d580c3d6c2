"""A million-frame job through the real HTTP API of a real `farm web` (gunicorn, production settings, as
bench/scale.py starts it) on the local Postgres, Redis and a moto S3 server.

    python -m bench.million [--frames 1000000] [--chunk-size 100] [--requests 40] [--workers 2]

It submits the job (after one small job, so the web process is warm and its baseline memory is honest), and reports
how long the submission took to answer, when its job and chunk rows were committed and when its 10,000 tasks were
all on the broker (sent off the request, after the answer), the web process's resident memory before and after and
its peak (VmHWM), the frames table's size, and p50/p99 of the jobs list (page and API), the job page,
`GET /api/jobs/<id>` and the first and last pages of `GET /api/jobs/<id>/frames` while the job waits; then again
while `--workers` workers with the benchmark-only null renderer render its first chunks. Then it cancels and deletes
the job, timing both.

Before the cancel it times what a claim adds for the chunk's frame rows (the chunk's one INSERT … SELECT, in a
transaction rolled back) over 100 of the job's chunks: the job is accepted without frame rows, each chunk's are made
when a worker claims it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import redis

from bench.common import make_scene, report, services, spawn_workers, stop_workers
from farm.db import Database
from farm.jobs.statements import CHUNK_FRAMES
from farm.messaging.broker import PRIORITY_SEP
from tests.helpers import HTTP, FarmProcesses, submit, wait_for_status, wait_until


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (the peak) of a process, in KiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


def gunicorn_worker(master: int) -> int:
    """The web process that serves requests: the one child of `farm web` (gunicorn's master, one worker)."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def latencies(url: str, count: int) -> tuple[float, float]:
    """p50 and p99 of `count` GETs of `url`, one after another, in ms; every answer must be 200."""
    took = []
    for _ in range(count):
        started = time.perf_counter()
        response = HTTP.get(url, timeout=60)
        took.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code, response.text[:300])
    cuts = statistics.quantiles(took, n=100)
    return cuts[49], cuts[98]


def committed_and_sent(env: dict[str, str], name: str, tasks: int, started: float, found: list[float]) -> None:
    """Wait until a job called `name` is visible in the database, its job and chunk rows committed (the submission
    then answers), and then until its `tasks` render tasks are all on the broker (a thread of the web process sends
    them after the answer); append when each happened, in seconds since `started`."""
    with psycopg.connect(env["FARM_DATABASE_URL"], autocommit=True) as conn:
        while not conn.execute("SELECT 1 FROM jobs WHERE name = %s", (name,)).fetchone():
            time.sleep(0.05)
    found.append(time.perf_counter() - started)
    queue = env["FARM_QUEUE"]
    keys = [queue, *(f"{queue}{PRIORITY_SEP}{step}" for step in range(1, 10))]
    client = redis.Redis.from_url(env["FARM_BROKER_URL"])
    try:
        while sum(client.llen(key) for key in keys) < tasks:
            time.sleep(0.1)
    finally:
        client.close()
    found.append(time.perf_counter() - started)


def snapshot_ms(url: str) -> float:
    """ms from opening the job's live stream (what its page does next) to the end of its snapshot. The server learns
    that the stream was closed at its next keepalive, so each call holds one of its threads for up to 15 s."""
    started = time.perf_counter()
    with HTTP.get(url, headers={"Accept": "text/event-stream"}, stream=True, timeout=60) as response:
        lines = response.iter_lines(decode_unicode=True)
        next(line for line in lines if line == "event: snapshot")
        assert next(lines).startswith("data: {")
    return (time.perf_counter() - started) * 1000


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def frames_table_mb(database_url: str) -> float:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT pg_total_relation_size('frames')").fetchone()
    return (row[0] if row else 0) / 2**20


def chunk_rows_ms(database_url: str, job_id: str, chunks: int) -> tuple[float, float]:
    """p50 and p99, in ms, of making one chunk's frame rows as its claim does, for 100 of the job's chunks spread
    over its range, each in a transaction rolled back."""
    took = []
    database = Database(database_url)
    with database.engine.connect() as conn:
        for index in range(0, chunks, max(1, chunks // 100)):
            started = time.perf_counter()
            conn.execute(CHUNK_FRAMES["postgresql"], {"job": job_id, "index": index})
            took.append((time.perf_counter() - started) * 1000)
            conn.rollback()
    database.engine.dispose()
    cuts = statistics.quantiles(took, n=100)
    return cuts[49], cuts[98]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--chunk-size", type=int, default=100, help="frames per chunk (a million in 10,000 chunks)")
    parser.add_argument("--requests", type=int, default=40, help="GETs of each page, for its p50 and p99")
    parser.add_argument("--workers", type=int, default=2, help="null-renderer workers started for the second look")
    args = parser.parse_args()
    extra = {
        "FARM_MAX_FRAMES": str(max(args.frames, 1)),
        "FARM_RENDERER": "null-benchmark-only",
        "FARM_WARM_BLENDER": "0",
    }
    with tempfile.TemporaryDirectory(prefix="farm-million-") as tmp_name, services(Path(tmp_name), **extra) as env:
        run(args, env, Path(tmp_name))


def run(args: argparse.Namespace, env: dict[str, str], tmp: Path) -> None:
    scene = make_scene(env, tmp / "scene.blend", frames=10, width=64, height=36, samples=1)
    (tmp / "logs").mkdir()
    procs = FarmProcesses(env, tmp / "logs")
    workers: list[subprocess.Popen[bytes]] = []
    try:
        procs.start_web()
        web = gunicorn_worker(procs.procs["web"].pid)
        warm = submit(procs.url, scene, name="warm-up", frame_start=1, frame_end=10, chunk_size=5)
        warm.raise_for_status()
        for path in ("/", "/api/jobs", f"/jobs/{warm.json()['job']['id']}"):
            HTTP.get(procs.url + path, timeout=30).raise_for_status()
        before = memory_kib(web)

        started = time.perf_counter()
        committed: list[float] = []
        chunks = -(-args.frames // args.chunk_size)
        watch = threading.Thread(
            target=committed_and_sent, args=(env, "million", chunks, started, committed), daemon=True
        )
        watch.start()
        with open(scene, "rb") as blend:  # the helpers' `submit` gives up after 120 s; a loaded machine may need more
            response = HTTP.post(
                f"{procs.url}/api/jobs",
                files={"file": (scene.name, blend)},
                data={
                    "name": "million",
                    "frame_start": "1",
                    "frame_end": str(args.frames),
                    "chunk_size": str(args.chunk_size),
                },
                timeout=1800,
            )
        accepted = time.perf_counter() - started
        load = os.getloadavg()[0]  # this machine's: other work on it slows every figure below
        assert response.status_code == 201, response.text[:500]
        job = response.json()["job"]
        job_id = job["id"]
        assert job["render"]["frames_to_render"] == args.frames, job["render"]
        after = memory_kib(web)
        table_mb = frames_table_mb(env["FARM_DATABASE_URL"])

        last_page = f"/api/jobs/{job_id}/frames?offset={args.frames - 1000}&limit=1000"
        pages = {
            "jobs list page `/`": "/",
            "`GET /api/jobs`": "/api/jobs",
            "job page `/jobs/<id>`": f"/jobs/{job_id}",
            "`GET /api/jobs/<id>`": f"/api/jobs/{job_id}",
            "`GET /api/jobs/<id>/frames` (first page, 10,000)": f"/api/jobs/{job_id}/frames",
            "`GET /api/jobs/<id>/frames` (last 1,000)": last_page,
            "`GET /api/jobs/<id>/chunks` (first page, 1,000)": f"/api/jobs/{job_id}/chunks",
        }
        stream = f"{procs.url}/api/jobs/{job_id}/events"
        snapshot = "live stream: opened → snapshot read (first open, then a second one)"

        def look() -> dict[str, tuple[float, float]]:
            found = {name: latencies(procs.url + path, args.requests) for name, path in pages.items()}
            return found | {snapshot: (snapshot_ms(stream), snapshot_ms(stream))}

        waiting = look()
        watch.join(600)  # every task on the broker before any worker takes one
        assert len(committed) == 2, "the tasks were not all sent within 10 minutes"
        rows_ms = chunk_rows_ms(env["FARM_DATABASE_URL"], job_id, chunks)
        tail = HTTP.get(procs.url + last_page, timeout=60).json()
        assert tail["total"] == args.frames and tail["frames"][-1]["frame"] == args.frames, tail["frames"][-1:]

        rendering: dict[str, tuple[float, float]] = {}
        if args.workers:
            workers = spawn_workers(procs, args.workers, tmp, "million")

            def rendered() -> int:
                return HTTP.get(f"{procs.url}/api/jobs/{job_id}", timeout=60).json()["job"]["render"]["frames_rendered"]

            wait_until(lambda: rendered() >= 100, timeout=300, what="the workers to render 100 frames", interval=1)
            rendering = look()
            frames_during = rendered()
        after_reads = memory_kib(web)

        cancel_s = timed(lambda: HTTP.post(f"{procs.url}/api/jobs/{job_id}/cancel", timeout=120).raise_for_status())
        settled_s = cancel_s + timed(lambda: wait_for_status(procs.url, job_id, {"CANCELED"}, timeout=600))
        delete_s = timed(lambda: HTTP.delete(f"{procs.url}/api/jobs/{job_id}", timeout=600).raise_for_status())
        assert HTTP.get(f"{procs.url}/api/jobs/{job_id}", timeout=30).status_code == 404

        mib = 1024
        rows: list[tuple[str, str]] = [
            ("job", f"{args.frames:,} frames in chunks of {args.chunk_size} ({chunks:,})"),
            ("machine's load average (1 min): at the answer / at the end", f"{load:.1f} / {os.getloadavg()[0]:.1f}"),
            ("submission answered (201)", f"{accepted:.2f} s"),
            ("… its job and chunk rows committed after", f"{committed[0]:.2f} s (no frame rows: a claim makes them)"),
            (f"… its {chunks:,} tasks all on the broker after", f"{committed[1]:.2f} s (sent after the answer)"),
            (
                "web process RSS before → after the submission",
                f"{before['VmRSS'] / mib:.0f} → {after['VmRSS'] / mib:.0f} MiB",
            ),
            (
                "web process peak RSS (VmHWM) before → after",
                f"{before['VmHWM'] / mib:.0f} → {after['VmHWM'] / mib:.0f} MiB",
            ),
            ("web process RSS after every read below", f"{after_reads['VmRSS'] / mib:.0f} MiB"),
            ("frames table (rows and indexes), after the submission", f"{table_mb:.1f} MiB"),
        ]

        def shown(name: str, first: float, second: float) -> str:
            return (
                f"{first:.0f} ms, {second:.0f} ms" if name == snapshot else f"p50 {first:.0f} ms, p99 {second:.0f} ms"
            )

        for name, values in waiting.items():
            during = f"; while rendering: {shown(name, *rendering[name])}" if name in rendering else ""
            rows.append((name, shown(name, *values) + during))
        if args.workers:
            rows.append(
                ("frames rendered by the second look", f"{frames_during} ({args.workers} null-renderer workers)")
            )
        rows += [
            ("cancel answered / CANCELED", f"{cancel_s:.2f} s / {settled_s:.2f} s"),
            ("delete answered (204)", f"{delete_s:.2f} s"),
        ]
        claim_rows = f"p50 {rows_ms[0]:.1f} ms, p99 {rows_ms[1]:.1f} ms"
        rows.append(("a claim's frame rows (one chunk's INSERT … SELECT, 100 chunks)", claim_rows))
        report(
            "million",
            f"A {args.frames:,}-frame job",
            ("measure", "value"),
            rows,
            notes=f"{args.requests} GETs of each, one after another, while the job is QUEUED"
            + (f", then while {args.workers} workers render it with the null renderer" if args.workers else "")
            + ". Pages are fetched with the admin's Bearer token.",
        )
    finally:
        stop_workers(workers)
        procs.stop_all()


if __name__ == "__main__":
    main()
