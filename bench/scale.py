"""Studio scale, simulated on one machine: N real `farm worker` processes (each its own hostname, cache and frame
cache) on the local Postgres, a Redis of this run's own (so that it can be restarted mid-job) and a moto S3 server.
They render with the benchmark-only sleep renderer (`FARM_RENDERER=sleep-benchmark-only:S`: S seconds a frame and a
1×1 PNG), so the CPU stays with the farm itself.

    python -m bench.scale --workers 16 --frames 2000 --frame-seconds 2 [--chunk-size 5] [--kill 0.25] [--restart-redis]
        [--db-connections 1] [--heartbeat 5] [--web-workers 2] [--web-threads 32] [--polls 200] [--streams 50]

While the job runs, status polls (`GET /api/jobs/<id>`) go at `--polls` a second and `--streams` live job pages
(SSE) stay open (bench/load.py, in a process of its own); a janitor sweeps every 5 s beside the workers' own. moto
runs in a process of its own too. It reports farm efficiency (ideal time ÷ actual, ideal = frames × S ÷ workers),
the time to the first and the last frame, Postgres transactions per second, the CPU of every Postgres process and of
the machine, Postgres connections (before the workers, per idle worker, peak), the workers' memory, Redis' peak
memory, the API's p50 and p99, and janitor sweep times.
`--kill F` SIGKILLs that fraction of the workers halfway, `--restart-redis` restarts Redis a third of the way; either
way every frame must end DONE and stored exactly once, which it checks. Its last line is `efficiency E at N workers`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import boto3
import psycopg
import redis
from sqlalchemy import func, select

from bench.common import PG, make_scene, report, services, spawn_workers, stop_workers
from farm.celery_app import make_celery
from farm.config import load_settings
from farm.db import Database
from farm.messaging.janitor import Janitor
from farm.models import Chunk, Frame, FrameStatus, Job
from tests.helpers import HTTP, FarmProcesses, free_port, submit, wait_for_status, wait_until


@contextlib.contextmanager
def own_redis(folder: Path) -> Iterator[tuple[str, Callable[[], None]]]:
    """A Redis of this run's own, and a function that restarts it (a broker outage mid-job)."""
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        procs.append(subprocess.Popen([*argv, "--dir", str(folder)], stdout=subprocess.DEVNULL))
        wait_until(lambda: _pings(port), timeout=10, what="redis-server to answer")

    def restart(down_seconds: float = 5.0) -> None:
        procs[-1].terminate()
        procs[-1].wait(10)
        time.sleep(down_seconds)
        start()

    start()
    try:
        yield f"redis://127.0.0.1:{port}/0", restart
    finally:
        for proc in procs:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)


def _pings(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=1).ping())
    except redis.ConnectionError:
        return False


def start_workers(procs: FarmProcesses, count: int, tmp: Path) -> list[subprocess.Popen[bytes]]:
    """Start every worker at once and wait until all have registered ONLINE."""
    workers = spawn_workers(procs, count, tmp, "scale")

    def all_online() -> bool:
        found = HTTP.get(f"{procs.url}/api/workers", timeout=10).json()["workers"]
        return sum(w["status"] == "ONLINE" for w in found) >= count

    wait_until(all_online, timeout=120 + 5 * count, what=f"{count} workers to register", interval=2)
    return workers


def steady_efficiency(finished: list[datetime], ideal_rate: float) -> float:
    """The job's pace once every worker is busy and before the last chunks leave some idle: frames stored between
    the 10th and the 90th per cent of them, a second, over the ideal (workers ÷ seconds a frame). Apart from the
    start (submission, first claims) and the tail (at most a chunk), which the whole job's efficiency includes."""
    low, high = finished[len(finished) // 10], finished[len(finished) * 9 // 10]
    seconds = (high - low).total_seconds()
    return (len(finished) * 8 // 10) / seconds / ideal_rate if seconds > 0 else 0.0


def postgres_cpu_seconds() -> float:
    """CPU time of every Postgres process on this machine (user + system), counting backends that have exited
    through the postmaster's reaped children's time."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            if stat[stat.index("(") + 1 : stat.rindex(")")] == "postgres":
                fields = stat[stat.rindex(")") + 2 :].split()
                total += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return total / tick


@functools.cache
def admin() -> psycopg.Connection:
    """The bench's one connection for its counts, opened before the workers: with 64 workers and a loaded web app
    the server may have no connection left to give a new one."""
    return psycopg.connect(f"{PG}/postgres", autocommit=True)


def transactions(database: str) -> int:
    row = (
        admin()
        .execute("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (database,))
        .fetchone()
    )
    return int(row[0]) if row else 0


def connections(database: str | None) -> int:
    """Client connections to this database (None: to the whole server)."""
    row = (
        admin()
        .execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND "
            "(%s::text IS NULL OR datname = %s)",
            (database, database),
        )
        .fetchone()
    )
    return int(row[0]) if row else 0


def max_connections() -> int:
    row = admin().execute("SHOW max_connections").fetchone()
    return int(row[0]) if row else 0


def stored_objects(env: dict[str, str], prefix: str) -> int:
    """Frame images in the bucket under `prefix` (thumbnails apart): one per frame if each was stored exactly once."""
    bucket, _, root = env["FARM_STORAGE_URL"].removeprefix("s3://").partition("/")
    client = boto3.client("s3", endpoint_url=env["FARM_S3_ENDPOINT_URL"])
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{root}/{prefix}")
    return sum(1 for page in pages for item in page.get("Contents", []) if "thumb" not in item["Key"])


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(values) - idle) / tick, sum(values) / tick


def group_memory(groups: set[int]) -> int:
    """Memory of every process in these process groups (the workers: each a Celery parent and its pool), as PSS:
    pages a forked pool process still shares with its parent are counted once, split between them."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[2]) not in groups:  # pgrp
                continue
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
    return total


def percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def redis_work(url: str) -> tuple[int, float]:
    """Commands Redis has processed and the CPU seconds it has used, since it started."""
    info = redis.Redis.from_url(url).info()
    return int(info["total_commands_processed"]), float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def start_load(procs: FarmProcesses, job_id: str, args: argparse.Namespace, out: Path) -> subprocess.Popen[bytes]:
    """bench.load, attached to this farm, in a process of its own: its threads would otherwise share this one's
    interpreter with the janitor and the measurements."""
    argv = [sys.executable, "-m", "bench.load", "--url", procs.url, "--token", procs.admin_token, "--job", job_id]
    argv += ["--polls", f"{args.polls:g}", "--streams", str(args.streams), "--duration", "0", "--out", str(out)]
    with open(procs.log_dir / "load.log", "ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--frame-seconds", type=float, default=2.0)
    parser.add_argument("--chunk-size", type=int, default=5, help="frames per chunk (5 × 2 s: 10 s chunks)")
    parser.add_argument("--polls", type=float, default=200, help="status polls a second while the job runs")
    parser.add_argument("--streams", type=int, default=50, help="live job pages (SSE) open while the job runs")
    parser.add_argument("--web-workers", type=int, default=2, help="`farm web` processes")
    parser.add_argument("--web-threads", type=int, default=32, help="threads per `farm web` process (FARM_WEB_THREADS)")
    parser.add_argument("--heartbeat", type=float, default=5.0, help="FARM_HEARTBEAT_SECONDS (the default: 5)")
    parser.add_argument(
        "--db-connections", type=int, default=1, help="FARM_WORKER_DB_CONNECTIONS: kept per worker process"
    )
    parser.add_argument("--kill", type=float, default=0.0, help="fraction of the workers SIGKILLed halfway")
    parser.add_argument("--restart-redis", action="store_true", help="restart Redis a third of the way")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="farm-scale-") as tmp_name:
        tmp = Path(tmp_name)
        with own_redis(tmp) as (broker, restart_redis):
            extra = {
                "FARM_BROKER_URL": broker,
                "FARM_RENDERER": f"sleep-benchmark-only:{args.frame_seconds:g}",
                "FARM_WARM_BLENDER": "0",
                "FARM_HEARTBEAT_SECONDS": f"{args.heartbeat:g}",
                "FARM_WORKER_DB_CONNECTIONS": str(args.db_connections),
            }
            with services(tmp, moto_process=True, **extra) as env:
                run(args, env, tmp, restart_redis)


def run(args: argparse.Namespace, env: dict[str, str], tmp: Path, restart_redis: Callable[[], None]) -> None:
    settings = load_settings(env, dotenv_path=None)
    database_name = env["FARM_DATABASE_URL"].rsplit("/", 1)[1]
    scene = make_scene(env, tmp / "scene.blend", frames=args.frames, width=64, height=36, samples=1)
    (tmp / "logs").mkdir()
    procs = FarmProcesses(env, tmp / "logs")
    workers: list[subprocess.Popen[bytes]] = []
    load: subprocess.Popen[bytes] | None = None
    try:
        procs.start_web(workers=args.web_workers, threads=args.web_threads)
        db = Database(settings.database_url, keep=1)
        janitor = Janitor(db, make_celery(settings), settings, name="bench-janitor")
        with db.session() as session:  # the bench's own connection, open before the count
            session.execute(select(1))
        before_workers = connections(database_name)
        launched = time.monotonic()
        workers = start_workers(procs, args.workers, tmp)
        registered = time.monotonic() - launched
        time.sleep(2 * args.heartbeat)  # every worker idle, past its first heartbeats
        idle_per_worker = (connections(database_name) - before_workers) / args.workers
        sweeps: list[float] = []
        redis_peak = connections_peak = server_peak = rss_peak = 0
        groups = {proc.pid for proc in workers}
        tx0, cpu0, (busy0, all0) = transactions(database_name), postgres_cpu_seconds(), machine_cpu()
        commands0, redis_cpu0 = redis_work(settings.broker_url)
        started = time.time()
        response = submit(
            procs.url, scene, name="scale", frame_start=1, frame_end=args.frames, chunk_size=args.chunk_size
        )
        response.raise_for_status()
        job_id = response.json()["job"]["id"]
        accepted = time.time() - started
        load = start_load(procs, job_id, args, procs.log_dir / "load.json")
        killed = restarted = False
        while True:
            sweep_started = time.monotonic()
            with contextlib.suppress(Exception):
                janitor.sweep()
                sweeps.append(time.monotonic() - sweep_started)
            with contextlib.suppress(redis.ConnectionError):
                used = redis.Redis.from_url(settings.broker_url).info("memory")["used_memory"]
                redis_peak = max(redis_peak, int(used))
            connections_peak = max(connections_peak, connections(database_name))
            server_peak = max(server_peak, connections(None))
            rss_peak = max(rss_peak, group_memory(groups))
            with db.session() as session:
                done = session.scalar(select(Job.frames_rendered).where(Job.id == job_id)) or 0
                status = session.scalar(select(Job.status).where(Job.id == job_id))
            if args.restart_redis and not restarted and done >= args.frames / 3:
                restart_redis()
                restarted = True
            if args.kill and not killed and done >= args.frames / 2:
                for proc in workers[: int(len(workers) * args.kill)]:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                killed = True
            if all(proc.poll() is not None for proc in workers):
                raise RuntimeError(f"every worker exited with {done} of {args.frames} frames done")
            if status in ("COMPLETED", "FAILED", "CANCELED") or done >= args.frames:
                break
            time.sleep(max(0.0, 5 - (time.monotonic() - sweep_started)))
        ended = time.time()
        tx1, cpu1, (busy1, all1) = transactions(database_name), postgres_cpu_seconds(), machine_cpu()
        commands1, redis_cpu1 = redis_work(settings.broker_url)
        final = wait_for_status(procs.url, job_id, {"COMPLETED", "FAILED"}, timeout=3600)
        completed = time.time() - started
        load.send_signal(signal.SIGTERM)
        load.wait(60)
        polls = json.loads((procs.log_dir / "load.json").read_text())
        with db.session() as session:
            first, last = session.execute(
                select(func.min(Frame.finished_at), func.max(Frame.finished_at)).where(Frame.job_id == job_id)
            ).one()
            stored = session.scalar(
                select(func.count()).where(Frame.job_id == job_id, Frame.status == FrameStatus.DONE)
            )
            retried = session.scalar(select(func.count()).where(Chunk.job_id == job_id, Chunk.attempts > 1))
            finished = session.scalars(select(Frame.finished_at).where(Frame.job_id == job_id).order_by("finished_at"))
            steady = steady_efficiency(list(finished), args.workers / args.frame_seconds)
        objects = stored_objects(env, f"jobs/{job_id}/frames/")
        first_s = first.replace(tzinfo=UTC).timestamp() - started
        last_s = last.replace(tzinfo=UTC).timestamp() - started
        ideal = args.frames * args.frame_seconds / args.workers
        efficiency = ideal / last_s
        wall = ended - started
        p, st = polls["polls"], polls["streams"]
        rows = [
            ("job", f"{args.frames} frames × {args.frame_seconds:g} s, chunks of {args.chunk_size}, {final['status']}"),
            ("workers started → all ONLINE", f"{registered:.0f} s"),
            ("submission answered", f"{accepted:.2f} s"),
            ("first frame stored", f"{first_s:.1f} s"),
            ("last frame stored", f"{last_s:.1f} s (ideal {ideal:.1f} s)"),
            ("**efficiency** (ideal ÷ submission → last frame)", f"**{efficiency:.3f}**"),
            ("steady efficiency (frames from the 10th to the 90th per cent: rate ÷ ideal rate)", f"{steady:.3f}"),
            ("job COMPLETED (zip stored)", f"{completed:.1f} s"),
            ("frames DONE / frame images in S3", f"{stored} / {objects}"),
            ("chunks rendered more than once (retried)", retried),
            ("Postgres transactions/s", f"{(tx1 - tx0) / wall:.0f}"),
            ("Postgres CPU (all processes on the machine)", f"{(cpu1 - cpu0) / wall:.2f} cores"),
            ("machine CPU busy (2 cores = 100 %)", f"{100 * (busy1 - busy0) / max(1e-9, all1 - all0):.0f} %"),
            (
                "Postgres connections: this farm before workers / per idle worker / peak",
                f"{before_workers} / {idle_per_worker:.2f} / {connections_peak} "
                f"(FARM_WORKER_DB_CONNECTIONS={args.db_connections})",
            ),
            ("Postgres connections, peak, whole server", f"{server_peak} of {max_connections()}"),
            ("workers' memory (PSS, all their processes), peak", f"{rss_peak / 2**30:.1f} GiB"),
            ("Redis memory, peak", f"{redis_peak / 2**20:.1f} MiB"),
            (
                "Redis commands/s, CPU",
                "— (restarted mid-run)"
                if args.restart_redis
                else f"{(commands1 - commands0) / wall:.0f}/s, {(redis_cpu1 - redis_cpu0) / wall:.2f} cores",
            ),
            (
                f"API status polls ({args.polls:g}/s asked)",
                f"{p['count']} polls ({p['rate']:.0f}/s), p50 {p['p50_ms']:.0f} ms, p99 {p['p99_ms']:.0f} ms, "
                f"max {p['max_ms']:.0f} ms, {p['errors']} errors"
                + (f" ({', '.join(f'{k} ×{v}' for k, v in p['error_kinds'].items())})" if p["errors"] else ""),
            ),
            (
                f"live pages ({args.streams} asked, "
                f"`farm web --workers {args.web_workers} --threads {args.web_threads}`)",
                f"{st['count'] - st['other'].get('degraded to polling', 0)} stream opens, "
                f"{st['other'].get('degraded to polling', 0)} degraded to polling every 3 s, {st['errors']} errors",
            ),
            (
                "janitor sweep (the bench's, every 5 s)",
                f"p50 {percentile(sweeps, 50) * 1000:.0f} ms, max {max(sweeps or [0]) * 1000:.0f} ms",
            ),
        ]
        if args.kill:
            count = int(len(workers) * args.kill)
            rows.append(("workers SIGKILLed halfway", count if killed else "none (the job ended first)"))
        if args.restart_redis:
            rows.append(("Redis restarted a third of the way", "yes" if restarted else "no (job ended first)"))
        if args.kill or args.restart_redis:
            alive = sum(proc.poll() is None for proc in workers)
            rows.append(("workers still running at the end", f"{alive} of {len(workers)}"))
        name = f"scale-{args.workers}" + ("-kill" if args.kill else "") + ("-redis" if args.restart_redis else "")
        report(
            name,
            f"Scale: {args.workers} workers, one job of {args.frames} frames at {args.frame_seconds:g} s a frame",
            ("measure", "value"),
            rows,
            notes=f"Measured {datetime.now(UTC):%H:%M} UTC; FARM_HEARTBEAT_SECONDS={args.heartbeat:g}; efficiency = "
            "ideal ÷ (submission → last frame stored), ideal = frames × seconds a frame ÷ workers.",
        )
        assert stored == objects == args.frames, f"{stored} frames DONE, {objects} images stored, of {args.frames}"
        print(f"efficiency {efficiency:.3f} at {args.workers} workers")
    finally:
        if load is not None and load.poll() is None:
            load.kill()
        stop_workers(workers)
        procs.stop_all()
        kept = Path(tempfile.gettempdir()) / f"farm-scale-{args.workers}-logs"
        shutil.rmtree(kept, ignore_errors=True)
        shutil.copytree(procs.log_dir, kept)  # the run's folder goes with it: its logs stay for a look
        print(f"logs in {kept}")


if __name__ == "__main__":
    main()
