"""`farm demo`: the whole farm on one machine with no servers — build a scene with Blender, start the web app and a
real Celery worker on the embedded defaults, submit through the HTTP API, watch it render, download the zip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from contextlib import ExitStack
from pathlib import Path

import click
from sqlalchemy import select

from farm import users
from farm.blender.launcher import SCRIPTS, run_script
from farm.cli.client import ClientError, FarmClient
from farm.cli.progress import ProgressPrinter
from farm.config import Settings
from farm.db import Database, init_db
from farm.models import Role, User

DEMO_USER = "demo"


def make_demo_scene(settings: Settings, path: Path, frames: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    run_script(settings, SCRIPTS / "demo_scene.py", [str(path), str(frames)], timeout=300)
    return path


def start(args: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "farm", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until_up(api: FarmClient, proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not api.health():
        if proc.poll() is not None:
            raise ClientError(f"the web app exited with code {proc.returncode}; see {log_path}")
        if time.monotonic() > deadline:
            raise ClientError(f"the web app did not answer within {timeout:.0f} s; see {log_path}")
        time.sleep(0.2)


def demo_token(settings: Settings) -> str:
    """A fresh API token of the demo's own admin (made on first use), so the demo needs nothing typed."""
    db = Database(settings.database_url)
    try:
        init_db(db.engine)
        with db.session() as session:
            user = session.scalars(select(User).where(User.name == DEMO_USER)).one_or_none()
            user = user or users.create_user(session, DEMO_USER, Role.ADMIN, actor="farm demo")
            return users.create_token(session, user, "farm demo", actor="farm demo").secret
    finally:
        db.engine.dispose()


def run_demo(settings: Settings, *, frames: int, chunk_size: int, port: int, out_dir: Path) -> Path:
    say = click.echo
    logs = settings.instance_dir / "logs"
    say(f"farm demo: instance folder {settings.instance_dir}")
    started = time.monotonic()
    scene = make_demo_scene(settings, settings.instance_dir / "demo" / "demo.blend", frames)
    say(f"  built the demo scene with Blender: {scene}")

    env = dict(
        os.environ,
        FARM_INSTANCE_DIR=str(settings.instance_dir),
        FARM_API_URL=f"http://127.0.0.1:{port}",
        PYTHONUNBUFFERED="1",
    )
    api = FarmClient(env["FARM_API_URL"], token=demo_token(settings))
    with ExitStack() as stack:
        web = start(["web", "--port", str(port), "--threads", "8"], logs / "web.log", env)
        stack.callback(stop, web)
        worker = start(["worker", "--name", "demo@%h"], logs / "worker.log", env)
        stack.callback(stop, worker)
        wait_until_up(api, web, logs / "web.log")
        say(f"  web app on {api.base_url} (log: {logs / 'web.log'}); worker started (log: {logs / 'worker.log'})")

        job = api.submit(scene, {"name": "demo", "frame_start": 1, "frame_end": frames, "chunk_size": chunk_size})
        say(f"  submitted job {job['id']}: {frames} frames in chunks of {chunk_size}")
        printer = ProgressPrinter()
        try:
            job = api.wait(job["id"], printer, timeout=1800)
        finally:
            printer.close()
        if job["status"] != "COMPLETED":
            raise ClientError(f"the demo job ended {job['status']}: {job.get('error')}; see {logs / 'worker.log'}")
        path = api.download(job["id"], out_dir)
    with zipfile.ZipFile(path) as archive:
        images = [n for n in archive.namelist() if n != "manifest.json"]
    say(
        f"  done in {time.monotonic() - started:.0f} s: {len(images)} frames, "
        f"{job['render']['average_render_time']:.0f} ms per frame on average"
    )
    say(f"zip: {path.resolve()}")
    say(f"url: {job['asset']['url']}")
    return path
