"""Helpers for tests that run the farm as real processes and wait on conditions with deadlines."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import requests
from PIL import Image

from farm.blender.launcher import LOG_EVENT_PREFIX, run_script
from farm.config import Settings, load_settings

BLENDER_FILES = Path(__file__).parent / "blender_files.py"
PLAIN_RENDER = Path(__file__).parent / "plain_render.py"

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def csrf_in(page: str) -> str:
    """The CSRF token a page carries for its forms and scripts."""
    found = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert found, page[:500]
    return found.group(1)


def wait_until(check: Callable[[], T], *, timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def make_user(settings: Settings, role: str, name: str | None = None, password: str | None = None) -> tuple[str, str]:
    """A user of `role` in the farm's database, made as `farm users create` does: (name, a new API token)."""
    from farm import users
    from farm.db import Database, init_db
    from farm.models import Role

    name = name or f"{role}-{secrets.token_hex(4)}"
    db = Database(settings.database_url)
    try:
        init_db(db.engine)
        with db.session() as session:
            user = users.create_user(session, name, Role(role), password, actor="test")
            return name, users.create_token(session, user, actor="test").secret
    finally:
        db.engine.dispose()


def signed_in(test_client: Any, token: str) -> Any:
    """A Flask test client whose every request carries `token` as its Bearer token."""
    test_client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return test_client


def browser_sign_in(page: Any, base_url: str, name: str, password: str) -> None:
    """Sign a Playwright page in through the login form, as a person would."""
    page.goto(f"{base_url}/login")
    page.fill("#username", name)
    page.fill("#password", password)
    page.click("#sign-in")
    page.wait_for_selector("#logout")


def sign_in_new_admin(page: Any, base_url: str, settings: Settings) -> str:
    """A new admin with a password, signed in in the browser `page` (the pages need a user), in place of whoever
    was signed in there before; their name."""
    page.context.clear_cookies()
    password = "browser test admin"
    name, _ = make_user(settings, "admin", password=password)
    browser_sign_in(page, base_url, name, password)
    return name


class FarmHttp:
    """`requests`, signed in: a request to a test farm's URL carries the admin token that farm was started with
    (each FarmProcesses registers its own), so tests written before the API needed a user keep their calls."""

    tokens: ClassVar[dict[str, str]] = {}

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        for base, token in self.tokens.items():
            if url.startswith(base + "/"):
                headers.setdefault("Authorization", f"Bearer {token}")  # dropped on a redirect to another host
        return requests.request(method, url, headers=headers, **kwargs)

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("PUT", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", url, **kwargs)


HTTP = FarmHttp()


def holds_for(check: Callable[[], object], *, seconds: float, what: str, interval: float = 0.2) -> None:
    """Something must NOT happen for `seconds`: poll `check` (falsy, or an AssertionError, is a breach) through the
    whole window, so a breach fails as soon as it happens and names `what`, instead of one look after a blind sleep."""
    started = time.monotonic()
    while True:
        if not check():
            raise AssertionError(f"{what} stopped holding after {time.monotonic() - started:.1f} s")
        if time.monotonic() - started >= seconds:
            return
        time.sleep(interval)


class FarmProcesses:
    """`farm web` and `farm worker` processes with their logs, for end-to-end tests. The farm gets an admin of its
    own (`admin_token`, also in the processes' FARM_TOKEN for the `farm` client commands, and in HTTP's calls)."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.port = free_port()
        self.env = dict(os.environ, FARM_SECRET_KEY=secrets.token_hex(32))  # a production farm needs a real one
        self.env.update(env, FARM_API_URL=f"http://127.0.0.1:{self.port}", PYTHONUNBUFFERED="1")
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.admin_token = self.env.get("FARM_TOKEN") or ""

    @property
    def url(self) -> str:
        return self.env["FARM_API_URL"]

    def _start(
        self, key: str, args: list[str], env: dict[str, str] | None = None, prefix: list[str] | None = None
    ) -> subprocess.Popen[bytes]:
        with open(self.log_dir / f"{key}.log", "ab") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                [*(prefix or []), sys.executable, "-m", "farm", *args],
                env=env or self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[key] = proc
        return proc

    def start_web(self, workers: int = 1, threads: int = 16) -> None:
        if not self.admin_token:
            self.admin_token = make_user(load_settings(self.env, dotenv_path=None), "admin")[1]
            self.env["FARM_TOKEN"] = self.admin_token
        FarmHttp.tokens[self.url] = self.admin_token
        args = ["web", "--port", str(self.port), "--threads", str(threads), "--workers", str(workers)]
        proc = self._start("web", args)

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"farm web exited: {self.log('web')[-2000:]}")
            try:
                return requests.get(f"{self.url}/api/health", timeout=5).ok
            except requests.RequestException:  # refused, or a slow first answer on a loaded box
                return False

        wait_until(up, timeout=60, what="farm web to answer")

    def start_worker(
        self,
        name: str,
        extra_env: dict[str, str] | None = None,
        concurrency: int = 1,
        queues: str | None = None,
        prefix: list[str] | None = None,
    ) -> str:
        """Start a worker (under `prefix`, a command such as `faketime -f -90s`) and wait until it has registered
        ONLINE; returns its hostname."""
        hostname = f"{name}@test"
        env = dict(self.env, **(extra_env or {}))
        args = ["worker", "--name", hostname, "--concurrency", str(concurrency), *(["-Q", queues] if queues else [])]
        proc = self._start(f"worker-{name}", args, env, prefix)

        def online() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"worker {name} exited: {self.log('worker-' + name)[-3000:]}")
            workers = HTTP.get(f"{self.url}/api/workers", timeout=5).json()["workers"]
            return any(w["hostname"] == hostname and w["status"] == "ONLINE" for w in workers)

        wait_until(online, timeout=60, what=f"worker {hostname} to register")
        return hostname

    def start_janitor(self, name: str) -> None:
        self._start(f"janitor-{name}", ["janitor"])

    def stop(self, key: str, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """Signal the process group and always reap the process, even if it is already on its way out."""
        proc = self.procs.pop(key, None)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop_all(self) -> None:
        for key in list(self.procs):
            self.stop(key)

    def log(self, key: str) -> str:
        path = self.log_dir / f"{key}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def build_blend(settings: Settings, kind: str, path: Path, arg: str | None = None) -> Path:
    """A .blend of one of the kinds tests/blender_files.py makes, built by Blender at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    run_script(settings, BLENDER_FILES, [kind, str(path), *([arg] if arg else [])], timeout=300)
    return path


def pixels(image: bytes | Path) -> tuple[tuple[int, int], str, bytes]:
    """An image's size, mode and decoded pixels: what "identical" means between two renders."""
    with Image.open(io.BytesIO(image) if isinstance(image, bytes) else image) as im:
        return im.size, im.mode, im.tobytes()


def plain_blender_frames(
    settings: Settings, blend: Path, out: Path, start: int, end: int, *, trusted: bool = False
) -> dict[int, Any]:
    """Plain Blender playing the file from `start` to `end` in one process (tests/plain_render.py), scripts off
    unless `trusted`: the pixels of each frame, to compare the farm's with."""
    args = [str(blend), str(out), str(start), str(end), *(["trusted"] if trusted else [])]
    run_script(settings, PLAIN_RENDER, args, timeout=600)
    return {f: pixels(out / f"{f:04d}.png") for f in range(start, end + 1)}


def farm_frames(base_url: str, job_id: str) -> dict[int, Any]:
    """The pixels of each frame the farm stored for the job."""
    frames = HTTP.get(f"{base_url}/api/jobs/{job_id}/frames", timeout=10).json()["frames"]
    return {f["frame"]: pixels(HTTP.get(f["url"], timeout=30).content) for f in frames if f["status"] == "DONE"}


def farm_events(log: str) -> list[dict[str, Any]]:
    """The events the worker copied into a chunk's Blender log, in order."""
    prefix = LOG_EVENT_PREFIX
    return [json.loads(ln.removeprefix(prefix)) for ln in log.splitlines() if ln.startswith(prefix)]


def blender_pids(base_url: str, job_id: str) -> set[int]:
    """The Blender processes that took the job's chunks, by the pid in each chunk log's `ready` event: a worker's
    spare Blender, started before the job, has no job id on its command line to be found by."""
    pids: set[int] = set()
    for chunk in HTTP.get(f"{base_url}/api/jobs/{job_id}/chunks", timeout=10).json()["chunks"]:
        log = HTTP.get(chunk["log_url"], timeout=10) if chunk.get("log_url") else None
        if log is not None and log.ok:
            pids |= {e["pid"] for e in farm_events(log.text) if e["event"] == "ready"}
    return pids


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def submit(base_url: str, blend: Path, **fields: Any) -> requests.Response:
    with open(blend, "rb") as fh:
        return HTTP.post(
            f"{base_url}/api/jobs",
            files={"file": (blend.name, fh)},
            data={k: str(v) for k, v in fields.items()},
            timeout=120,
        )


def get_job(base_url: str, job_id: str) -> dict[str, Any]:
    response = HTTP.get(f"{base_url}/api/jobs/{job_id}", timeout=10)
    response.raise_for_status()
    return response.json()["job"]


def wait_for_status(base_url: str, job_id: str, statuses: set[str], timeout: float = 240) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def reached() -> dict[str, Any] | None:
        seen["job"] = get_job(base_url, job_id)
        return seen["job"] if seen["job"]["status"] in statuses else None

    try:
        return wait_until(reached, timeout=timeout, what=f"job {job_id} to reach {sorted(statuses)}", interval=0.3)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {json.dumps(seen.get('job'))[:1500]}") from None


def check_zip(data: bytes, *, name: str, frames: range, size: tuple[int, int], ext: str = "png") -> dict[str, Any]:
    """Assert the contract's zip layout: one decodable image per frame at `size`, and a manifest whose sha256s
    match the images. Returns the manifest."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    width = max(4, len(str(frames[-1])))
    expected = {f"{f:0{width}d}.{ext}" for f in frames}
    assert set(archive.namelist()) == expected | {"manifest.json"}, archive.namelist()
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["name"] == name
    assert [e["frame"] for e in manifest["frames"]] == list(frames)
    for entry in manifest["frames"]:
        blob = archive.read(entry["file"])
        assert hashlib.sha256(blob).hexdigest() == entry["sha256"]
        assert entry["render_time"] > 0 and entry["worker"]
        image = Image.open(io.BytesIO(blob))
        image.load()
        assert image.size == size, (entry["file"], image.size)
    return manifest


def spare_blenders(worker_pid: int) -> set[int]:
    """The worker's spare Blender processes (`--serve spare`), among its descendants."""
    found = subprocess.run(["pgrep", "-f", "render_script.py -- --serve spare"], capture_output=True, text=True)
    return {int(p) for p in found.stdout.split() if descends_from(int(p), worker_pid) and alive(int(p))}


def descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            with open(f"/proc/{pid}/stat") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except FileNotFoundError:
            return False
    return False
