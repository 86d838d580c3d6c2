"""What every benchmark shares: the machine's Postgres and Redis (a fresh database and queue per run, removed after),
a moto S3 server over HTTP, real farm processes (the test suite's FarmProcesses), scenes made by the demo-scene
script, and a table that is printed and written to bench/results/<name>.md with the machine it ran on.

Benchmarks measure; they never pass or fail. Every figure is compared with a baseline run in the same invocation.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import redis

from farm.blender import devices
from farm.blender.devices import Device, to_env
from farm.blender.launcher import SCRIPTS, probe_scene, run_script
from farm.config import load_settings
from tests.helpers import FarmProcesses, free_port, submit, wait_for_status, wait_until

HERE = Path(__file__).parent
RESULTS = HERE / "results"
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
def services(tmp: Path, *, moto_process: bool = False, **extra: str) -> Iterator[dict[str, str]]:
    """A production-mode environment on a database and queue of its own, and a moto S3 server: in this process, or
    with `moto_process` in one of its own (where the benchmark's own threads would otherwise share its interpreter)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log

    run = uuid.uuid4().hex[:8]
    name = f"farm_bench_{run}"
    admin = psycopg.connect(f"{PG}/postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    creds = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(creds)
    port = free_port()
    moto = MotoProcess(port) if moto_process else ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
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


class MotoProcess:
    """`moto_server` in a process of its own, started and stopped as ThreadedMotoServer is."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        server = Path(sys.executable).with_name("moto_server")
        argv = [str(server), "-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._answers, timeout=30, what="moto_server to answer")

    def _answers(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True
        return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)


def make_scene(env: dict[str, str], path: Path, *, frames: int, width: int, height: int, samples: int) -> Path:
    """The demo scene (animated objects, Cycles) at the given size, made by Blender."""
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = load_settings(env, dotenv_path=None)
    run_script(
        settings, SCRIPTS / "demo_scene.py", [str(path), str(frames), str(width), str(height), str(samples)], 300
    )
    return path


@dataclass(frozen=True)
class Scene:
    """What a benchmark renders: the demo scene made at the asked size, or the user's own file (`--scene`), as is."""

    path: Path
    frame_start: int
    frame_end: int
    title: str  # for the table's heading
    spec: dict[str, Any]  # render_script.apply_spec's: the device a farm worker here chooses, and the format


def _blend_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {value}")
    return path.resolve()


def scene_arguments(parser: argparse.ArgumentParser, frames: int) -> None:
    parser.add_argument("--scene", type=_blend_file, help="a .blend of your own, rendered with its own settings")
    parser.add_argument("--frames", type=int, default=frames, help="how many frames, from the scene's first")
    parser.add_argument("--size", default="240x135", help="the demo scene's resolution")
    parser.add_argument("--samples", type=int, default=16, help="the demo scene's Cycles samples")


def bench_scene(env: dict[str, str], tmp: Path, args: argparse.Namespace) -> Scene:
    """The scene the arguments name, probed as the farm probes a submission (scripts off)."""
    settings = load_settings(env, dotenv_path=None)
    if args.scene:
        path = args.scene
    else:
        width, height = (int(v) for v in args.size.split("x"))
        path = tmp / "scene.blend"
        make_scene(env, path, frames=args.frames, width=width, height=height, samples=args.samples)
    found = probe_scene(settings, path)
    start = int(found["frame_start"])
    end = min(int(found["frame_end"]), start + args.frames - 1)
    size = f"{found['resolution_x']}×{found['resolution_y']}"
    what = path.name if args.scene else "the demo scene"
    device = devices.choose("AUTO", found.get("engine"), devices.detect(settings))
    return Scene(
        path=path,
        frame_start=start,
        frame_end=end,
        title=f"{end - start + 1} frames of {what} ({size}, {found.get('engine')} {found.get('samples')} samples, "
        f"{device.label})",
        spec={"device": device.to_spec(), "output_format": "PNG"},
    )


def plain_blender(scene: Scene, out: Path, frames: int | None = None) -> tuple[float, dict[str, Any]]:
    """Plain Blender rendering the scene's frames (the first `frames` of them) as one animation, on the device a
    farm worker would use (bench/plain_blender.py): the wall-clock time it started at, and its report (`ms` per
    frame, `written` times)."""
    end = scene.frame_end if frames is None else scene.frame_start + frames - 1
    started = time.time()
    events = run_script(
        load_settings(dotenv_path=None),
        HERE / "plain_blender.py",
        [str(scene.path), str(out), str(scene.frame_start), str(end), json.dumps(scene.spec)],
        timeout=24 * 3600,
    )
    report = next(e for e in events if e.get("event") == "frames")
    assert len(report["ms"]) == end - scene.frame_start + 1, report
    return started, report


def run_job(procs: FarmProcesses, blend: Path, **fields: object) -> tuple[str, float]:
    """Submit a job and wait until it COMPLETED; its id and the wall-clock time the submission started."""
    started = time.time()
    response = submit(procs.url, blend, name="bench", **fields)
    response.raise_for_status()
    job_id = response.json()["job"]["id"]
    assert wait_for_status(procs.url, job_id, {"COMPLETED", "FAILED"}, timeout=3600)["status"] == "COMPLETED"
    return job_id, started


def spawn_workers(procs: FarmProcesses, count: int, tmp: Path, prefix: str) -> list[subprocess.Popen[bytes]]:
    """`count` real `farm worker` processes, each with its own hostname (`<prefix>-<i>@bench`), cache and frame cache,
    and one CPU declared instead of detected (no Blender started to ask Cycles)."""
    cpu = to_env([Device(backend="CPU", id="CPU", name="benchmark CPU")])
    workers = []
    for i in range(count):
        env = dict(procs.env, FARM_CACHE_DIR=str(tmp / f"cache-{i}"), FARM_WORKER_DEVICES=cpu)
        with open(procs.log_dir / f"worker-{i}.log", "ab") as log:
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "farm", "worker", "--name", f"{prefix}-{i}@bench", "--concurrency", "1"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    return workers


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every worker's process group (Celery's parent and its pool), then wait up to 30 s for each."""
    for proc in workers:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in workers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
