"""The add-on's background work without Blender: what reaches the panel when things go wrong (the thread's error
becomes the status, never only a console trace), that a copy saved for a submission is always removed, and that the
API token goes out as a Bearer header. The happy path runs against a live farm in tests/e2e/test_addon.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from farm.addon.submitting import Task, job_page
from farm.cli.client import FarmClient
from tests.helpers import free_port, wait_until


def finished(task: Task) -> bool:
    return task.status.done and not task.alive


def test_unreachable_farm_is_the_panels_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    task = Task(FarmClient(url, timeout=5))
    task.follow("fd6a5152-a831-4294-bda1-212fd1baa8b7")
    wait_until(lambda: finished(task), timeout=30, what="the task to end")
    assert task.status.error.startswith(f"cannot reach the farm at {url}")
    assert task.status.text == f"Failed: {task.status.error}" and task.status.job_id


def test_a_file_that_cannot_be_packed_fails_and_its_saved_copy_is_removed(tmp_path: Path) -> None:
    copy = tmp_path / ".shot-farm-0123.blend"
    copy.write_bytes(b"not a blend file at all")
    task = Task(FarmClient(f"http://127.0.0.1:{free_port()}", timeout=5))
    task.submit(copy, {"name": "shot"}, saved_copy=copy)
    wait_until(lambda: finished(task), timeout=30, what="the task to end")
    assert task.status.error and not task.status.job_id
    assert not copy.exists()


class Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        Recorder.seen.append(self.headers.get("Authorization"))
        body = json.dumps({"job": {"id": "x", "status": "QUEUED"}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def recorder() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Recorder.seen = []
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_token_goes_as_bearer_header_only_when_set(recorder: str) -> None:
    FarmClient(recorder, token="s3cret").job("x")
    FarmClient(recorder).job("x")
    FarmClient(recorder, token="").job("x")
    assert Recorder.seen == ["Bearer s3cret", None, None]


def test_job_page_is_the_farms_page_for_the_job() -> None:
    assert job_page("http://farm:5000/", "abc") == "http://farm:5000/jobs/abc"
