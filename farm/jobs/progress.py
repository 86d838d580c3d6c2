"""How far along jobs are and when they will end, read from the chunks, frames and workers' paces in a few grouped
queries however many jobs are asked about (the jobs list shows 25 at a time), none of which reads all of a job's
frames: a status poll of a 20,000-frame job costs about what one of 20 does.

Progress counts the part of each rendering chunk's current frame that Blender has rendered (`Chunk.frame_progress`,
which the worker reads from Blender's output: farm/blender/progress.py), so it moves within a long frame. The ETA
shares what is left among the chunks rendering now at each worker's own pace on the job (farm/jobs/planning.py);
before any frame of the job is done, the pace is judged from the frame in progress (time since its chunk started ÷
the share Blender has rendered), so a job of long frames has an ETA during its first one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from farm.blender.progress import CEILING
from farm.clock import aware, database_now
from farm.jobs import planning
from farm.jobs.statements import TERMINAL_JOB
from farm.models import Chunk, ChunkStatus, Frame, FrameStatus, Job, JobStatus, WorkerPace

MIN_SHARE = 0.05  # of a frame rendered before its pace is judged from it


@dataclass(frozen=True)
class Pace:
    running: int  # chunks rendering now
    progress: float  # 0-100
    eta_seconds: float | None


def average_ms(job: Job) -> float | None:
    return round(job.render_ms_total / job.frames_rendered, 1) if job.frames_rendered else None


def paces(session: Session, jobs: Sequence[Job]) -> dict[str, Pace]:
    """Each job's Pace, by id."""
    active = [job.id for job in jobs if job.status not in TERMINAL_JOB]
    rendering: dict[str, list[tuple[int, str | None, int, float, datetime | None]]] = defaultdict(list)
    done_in: dict[int, int] = {}
    worker_ms: dict[tuple[str, str], float] = {}
    if active:
        for cid, job_id, worker, start, end, fraction, started in session.execute(
            select(
                Chunk.id,
                Chunk.job_id,
                Chunk.worker,
                Chunk.frame_start,
                Chunk.frame_end,
                Chunk.frame_progress,
                Chunk.started_at,
            ).where(Chunk.job_id.in_(active), Chunk.status == ChunkStatus.RENDERING)
        ):
            share = min(max(fraction or 0.0, 0.0), CEILING)
            rendering[job_id].append((cid, worker, end - start + 1, share, started))
        chunk_ids = [c[0] for chunks in rendering.values() for c in chunks]
        if chunk_ids:
            counted = session.execute(
                select(Frame.chunk_id, func.count())
                .where(Frame.chunk_id.in_(chunk_ids), Frame.status == FrameStatus.DONE)
                .group_by(Frame.chunk_id)
            )
            done_in = {cid: count for cid, count in counted}
        for job_id, worker, frames, ms in session.execute(
            select(WorkerPace.job_id, WorkerPace.worker, WorkerPace.frames, WorkerPace.render_ms_total).where(
                WorkerPace.job_id.in_(active), WorkerPace.frames > 0
            )
        ):
            worker_ms[(job_id, worker)] = ms / frames
    # A split still counts in parts until its frame is merged: parts done, of job.split.
    splits = [job.id for job in jobs if job.split > 1 and job.id in active and not job.frames_rendered]
    parts_done: dict[str, int] = {}
    if splits:
        counted = session.execute(
            select(Chunk.job_id, func.count())
            .where(Chunk.job_id.in_(splits), Chunk.status == ChunkStatus.DONE)
            .group_by(Chunk.job_id)
        )
        parts_done = {job_id: count for job_id, count in counted}
    now: list[datetime] = []  # the database's clock, read only if a first frame's pace is judged

    def first_frame_pace(share: float, started: datetime | None) -> float | None:
        """ms a frame, judged from the frame in progress: none before MIN_SHARE of it is rendered."""
        if share < MIN_SHARE or started is None:
            return None
        if not now:
            now.append(database_now(session))
        return (now[0] - aware(started)).total_seconds() * 1000 / share

    out = {}
    for job in jobs:
        chunks = rendering.get(job.id, [])
        total = job.frames_to_render
        if job.id in splits:  # in parts: each rendering chunk renders one, at its own pace
            done = parts_done.get(job.id, 0)
            shares = [share for _, _, _, share, _ in chunks]
            in_flight = [(1 - share, first_frame_pace(share, started)) for _, _, _, share, started in chunks]
            left = max(0, job.split - done - len(chunks))
            eta = planning.eta_seconds(left, in_flight, None)
            progress = round(min(100.0, 100 * (done + sum(shares)) / job.split), 1)
            out[job.id] = Pace(running=len(chunks), progress=progress, eta_seconds=eta)
            continue
        if job.status == JobStatus.COMPLETED or not total:
            out[job.id] = Pace(running=0, progress=100.0, eta_seconds=0.0)
            continue
        average = average_ms(job)
        in_flight = [
            (
                max(0.0, size - done_in.get(cid, 0) - share),
                worker_ms.get((job.id, worker or "")) or (None if average else first_frame_pace(share, started)),
            )
            for cid, worker, size, share, started in chunks
        ]
        in_chunks = sum(size - done_in.get(cid, 0) for cid, _, size, _, _ in chunks)
        queued = max(0, total - job.frames_rendered - in_chunks)
        rendered = job.frames_rendered + sum(share for _, _, _, share, _ in chunks)
        eta = None if job.status in TERMINAL_JOB else planning.eta_seconds(queued, in_flight, average)
        out[job.id] = Pace(running=len(chunks), progress=round(min(100.0, 100 * rendered / total), 1), eta_seconds=eta)
    return out
