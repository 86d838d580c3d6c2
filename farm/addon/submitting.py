"""The add-on's work off Blender's main thread: pack the .blend with `farm submit`'s own code
(farm/projects/packing.py and sending.py), upload only the files the farm lacks, submit, then follow the job until it
ends. A project can take minutes to hash and upload; done in Blender's main thread, that would freeze its UI.

Blender's data may only be touched from its main thread, so a `Task` never sees bpy: it is given paths and form
fields, and publishes a `Status` that the add-on copies into the panel's properties (on a timer). Stdlib, requests
and BAT only: this module ships inside the add-on's zip.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from farm.cli.client import TERMINAL, FarmClient
from farm.projects import packing, sending

FOLLOW_SECONDS = 2.0  # how often a followed job is asked for


@dataclass(frozen=True)
class Status:
    """What the panel shows, as one immutable value (the main thread reads it while the task's thread replaces it)."""

    text: str = ""  # one line, drawn on the progress bar
    fraction: float = 0.0  # the bar: 0..1 of the upload, then of the job
    job_id: str = ""
    job_status: str = ""  # the JOB's status, once it is submitted
    uploaded: str = ""  # "uploaded k of n files (b bytes)", as `farm submit` prints it
    warnings: tuple[str, ...] = ()  # the farm's warnings about the job (a missing texture)
    error: str = ""
    done: bool = False  # the thread has ended


def job_page(base_url: str, job_id: str) -> str:
    return f"{base_url.rstrip('/')}/jobs/{job_id}"


class Task:
    """One thread of farm work for the panel: a submission (then following its job), or following a job."""

    def __init__(self, api: FarmClient, follow_seconds: float = FOLLOW_SECONDS) -> None:
        self.api = api
        self.follow_seconds = follow_seconds
        self._lock = threading.Lock()
        self._status = Status()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def status(self) -> Status:
        with self._lock:
            return self._status

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, blend: Path, fields: Mapping[str, Any], saved_copy: Path | None = None) -> None:
        """Send `blend` (its project) and create the job; `saved_copy`: a file saved for this submission only,
        deleted once it is uploaded."""
        self._start(self._submit, blend, dict(fields), saved_copy)

    def follow(self, job_id: str) -> None:
        self._publish(job_id=job_id, text="Asking the farm about the job")
        self._start(self._follow, job_id)

    def stop(self) -> None:
        """Stop following (a new submission replaces this one); an upload under way finishes its file first."""
        self._stop.set()

    def _start(self, work: Callable[..., None], *args: Any) -> None:
        self._thread = threading.Thread(target=self._run, args=(work, *args), name="farm-submit", daemon=True)
        self._thread.start()

    def _run(self, work: Callable[..., None], *args: Any) -> None:
        try:
            work(*args)
        except Exception as exc:  # a thread's exception would only reach the console: the panel must say it
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._publish(error=message, text=f"Failed: {message}")
        finally:
            self._publish(done=True)

    def _publish(self, **changes: Any) -> None:
        with self._lock:
            self._status = replace(self._status, **changes)

    def _submit(self, blend: Path, fields: dict[str, Any], saved_copy: Path | None) -> None:
        try:
            self._publish(text="Finding the files the scene uses")
            with tempfile.TemporaryDirectory(prefix="farm-pack-") as workdir:
                project = packing.pack(blend, Path(workdir))
                self._publish(text=f"Hashing {len(project.files)} files")
                sent = sending.send(self.api, project, self._upload_bar)
        finally:
            if saved_copy is not None:
                saved_copy.unlink(missing_ok=True)
        self._publish(text="Creating the job", fraction=1.0)
        job = self.api.submit_manifest(sent.manifest, fields)
        self._publish(
            job_id=job["id"],
            uploaded=f"uploaded {sent.uploaded} of {sent.total} files ({sent.uploaded_bytes} bytes)",
            warnings=tuple(w["message"] for w in job.get("warnings", [])),
        )
        self._show(job)
        self._follow(job["id"])

    @contextlib.contextmanager
    def _upload_bar(self, files: int, total_bytes: int) -> Iterator[Callable[[int], None]]:
        label = f"Uploading {files} files ({total_bytes / 2**20:.1f} MiB)"
        sent = 0
        self._publish(text=label, fraction=0.0)

        def advance(nbytes: int) -> None:
            nonlocal sent
            sent += nbytes
            self._publish(fraction=sent / total_bytes if total_bytes else 1.0)

        yield advance

    def _follow(self, job_id: str) -> None:
        while not self._stop.is_set():
            job = self.api.job(job_id)
            self._show(job)
            if job["status"] in TERMINAL:
                return
            self._stop.wait(self.follow_seconds)

    def _show(self, job: Mapping[str, Any]) -> None:
        render = job["render"]
        done, total = render["frames_rendered"], render["frames_to_render"]
        share = render.get("progress")  # 0-100, moving within a frame, where the farm reports it
        fraction = share / 100 if share is not None else (done / total if total else 0.0)
        self._publish(
            job_status=job["status"],
            fraction=1.0 if job["status"] == "COMPLETED" else fraction,
            text=f"{job['status'].capitalize()}: {done} of {total} frames",
            error=(job.get("error") or "job failed") if job["status"] == "FAILED" else "",
        )
