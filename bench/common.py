"""What every benchmark shares: the machine's Postgres and Redis (a fresh database and queue per run, removed after),
a moto S3 server over HTTP, real farm processes (the test suite's FarmProcesses), scenes made by the demo-scene
script, and a table that is printed and written to bench/results/<name>.md with the machine it ran on.

Benchmarks measure; they never pass or fail. Every figure is compared with a baseline run in the same invocation.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import statistics
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import redis

from farm.blender import SCRIPTS, run_script
from farm.config import load_settings

RESULTS = Path(__file__).parent / "results"
PG = os.environ.get("FARM_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS = os.environ.get("FARM_BENCH_REDIS", "redis://127.0.0.1:6379/0")


def machine() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), model)
    with contextlib.suppress(OSError), open("/proc/meminfo") as fh:
        mem = int(fh.readline().split()[1]) / 2**20
        return f"{model}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Linux {platform.release()}"
    return f"{model}, {os.cpu_count()} cores"


def report(name: str, title: str, header: Sequence[str], rows: Sequence[Sequence[object]], notes: str = "") -> str:
    """Print the table and write it, with where and when it was measured, to bench/results/<name>.md."""
    lines = [
        f"# {title}",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}.",
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
        *("| " + " | ".join(str(c) for c in row) + " |" for row in rows),
    ]
    if notes:
        lines += ["", notes.strip()]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    return text


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


@contextlib.contextmanager
def services(tmp: Path, **extra: str) -> Iterator[dict[str, str]]:
    """A production-mode environment on a database and queue of its own, and a moto S3 server."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    from tests.helpers import free_port

    run = uuid.uuid4().hex[:8]
    name = f"farm_bench_{run}"
    admin = psycopg.connect(f"{PG}/postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    creds = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(creds)
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    env = {
        "FARM_INSTANCE_DIR": str(tmp / "instance"),
        "FARM_DATABASE_URL": f"{PG}/{name}",
        "FARM_BROKER_URL": REDIS,
        "FARM_RESULT_BACKEND": f"db+{PG}/{name}",
        "FARM_STORAGE_URL": f"s3://bench-{run}/renders",
        "FARM_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "FARM_QUEUE": f"bench-{run}",
        "FARM_HEARTBEAT_SECONDS": "1",
        **creds,
        **extra,
    }
    try:
        yield env
    finally:
        moto.stop()
        client = redis.Redis.from_url(REDIS)
        for key in client.scan_iter(f"*bench-{run}*"):
            client.delete(key)
        client.close()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def make_scene(env: dict[str, str], path: Path, *, frames: int, width: int, height: int, samples: int) -> Path:
    """The demo scene (animated objects, Cycles) at the given size, made by Blender."""
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = load_settings(env, dotenv_path=None)
    run_script(
        settings, SCRIPTS / "demo_scene.py", [str(path), str(frames), str(width), str(height), str(samples)], 300
    )
    return path


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started
