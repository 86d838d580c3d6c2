"""Keep one Blender process per worker process warm across consecutive chunks of one job: the file stays loaded,
so a chunk pays neither Blender's start-up nor the file load (the one-shot path, FARM_WARM_BLENDER=0, pays both).

A warm process serves one job only (a new job gets a fresh process: no state or memory crosses between users'
files), is recycled after FARM_WARM_MAX_CHUNKS chunks or above FARM_WARM_MAX_MB of memory, and is dropped after
anything but a clean chunk (error, crash, cancel, stall) — so a crash costs only the frame it was rendering.

Between jobs a spare Blender waits, started but with no file loaded, so the next job's first chunk does not wait
for Blender's start-up either: it is made when a worker process starts and when a job's process is let go, while
nothing renders, and becomes the next job's process (it has never seen another user's file).

It also holds the job's project folder (workers/job_project.py), which Blender reads while it renders: the same
folder for every chunk of the job here, also across a recycled Blender, removed when the job is let go (`close`)
or another job's project is made.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from celery import current_app
from celery.signals import worker_process_init

from farm.blender.launcher import SCRIPTS, blender_command
from farm.config import Settings
from farm.storage import Storage
from workers import job_project
from workers.benchmark_renderers import is_benchmark_renderer
from workers.blender_process import BlenderProcess

log = logging.getLogger(__name__)
RENDER_SCRIPT = SCRIPTS / "render_script.py"


class WarmBlender:
    def __init__(self) -> None:
        self.process: BlenderProcess | None = None
        self.job_id: str | None = None
        self.chunks = 0
        self.spare: BlenderProcess | None = None
        self.project: job_project.JobProject | None = None

    def project_for(self, settings: Settings, storage: Storage, job_id: str, manifest_sha256: str) -> Path:
        """The main .blend of the job's project folder, made now if this process has none for the job (another
        job's folder is removed first)."""
        if self.project is not None and self.project.job_id == job_id and self.project.blend.is_file():
            return self.project.blend
        self.drop_project()
        self.project = job_project.build(settings, storage, job_id, manifest_sha256)
        return self.project.blend

    def drop_project(self) -> None:
        if self.project is not None:
            self.project.remove()
        self.project = None

    def for_chunk(self, settings: Settings, job_id: str, log_path: Path, hide: dict[str, str]) -> BlenderProcess:
        """The job's warm process (started now if there is none, or it serves another job or died), logging to
        this chunk's log with `hide`'s paths replaced."""
        if self.process is not None and self.job_id != job_id:
            self.close()
        elif self.process is not None and not self.process.alive:
            self.recycle()
        if self.process is None:
            spare, self.spare = self.spare, None
            if spare is not None and spare.alive:
                spare.set_log(log_path, hide)
                self.process = spare
            else:
                if spare is not None:
                    spare.close()
                argv = blender_command(settings, RENDER_SCRIPT, ["--serve", job_id])  # the job id names it in ps
                self.process = BlenderProcess(settings, argv, log_path, hide)
                self.process.start(keep_stdin=True)
            self.job_id, self.chunks = job_id, 0
        else:
            self.process.set_log(log_path, hide)
        return self.process

    def after_chunk(self, settings: Settings, *, clean: bool) -> None:
        """Recycle after an unclean chunk, after N chunks, or above the memory ceiling."""
        self.chunks += 1
        if self.process is None:
            return
        rss = self.process.rss_bytes()
        if not clean or self.chunks >= settings.warm_max_chunks or rss > settings.warm_max_bytes:
            log.info("recycling warm Blender after %d chunks (%d MiB)", self.chunks, rss // 2**20)
            self.recycle()

    def recycle(self) -> None:
        """Stop the job's Blender; the job goes on here (its next chunk starts another in the same project)."""
        if self.process is not None:
            self.process.close()
        self.process, self.chunks = None, 0

    def close(self) -> None:
        """Let the job go: its Blender stops and its project folder is removed (unless it is already the next
        job's)."""
        if self.project is not None and self.project.job_id == self.job_id:
            self.drop_project()
        self.recycle()
        self.job_id = None

    def serves(self, job_id: str) -> bool:
        """Whether this process holds anything of the job: its Blender, or its project folder (a one-shot worker
        keeps the folder for the job's next chunk too)."""
        return self.job_id == job_id or (self.project is not None and self.project.job_id == job_id)

    def let_go(self, job_id: str) -> None:
        """Nothing more of the job is to come: its Blender stops and its project folder is removed."""
        if self.project is not None and self.project.job_id == job_id:
            self.drop_project()
        if self.job_id == job_id:
            self.close()

    def prepare(self, settings: Settings) -> None:
        """Start the spare Blender if there is none (its output before it takes a job is not kept). A convenience:
        if it cannot start, the next chunk starts its own, and says why if that fails too."""
        if not settings.warm_blender or is_benchmark_renderer(settings.renderer):
            return
        if self.spare is not None and self.spare.alive:
            return
        try:
            argv = blender_command(settings, RENDER_SCRIPT, ["--serve", "spare"])
            self.spare = BlenderProcess(settings, argv, Path(os.devnull))
            self.spare.start(keep_stdin=True)
        except Exception as exc:
            self.spare = None
            log.warning("no spare Blender: %s", exc)


WARM = WarmBlender()  # one per worker process: Celery runs one task at a time in each


@worker_process_init.connect
def spare_at_start(**_: Any) -> None:
    """Each pool process of a farm worker starts with a spare Blender for its first job."""
    settings = getattr(current_app.conf, "farm_settings", None)
    if settings is not None:
        WARM.prepare(settings)
