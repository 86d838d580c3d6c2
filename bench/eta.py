"""How wrong the farm's ETA was, judged afterwards against when each job's last frame really finished, read from the
database's events (the audit trail every status change writes).

For every COMPLETED job, the job is replayed from its events: at each moment a frame finished, what was rendering
where (chunk events, with the worker), which frames were done and how long each took on which worker (frame
events). From that state both estimates are made as the farm would have made them then, and compared with the
time left until the job's last frame finished:

- `per-worker`: what the farm says now (farm/jobs/planning.py `eta_seconds`): what is left is shared by the chunks
  rendering, each at its own worker's pace on the job, no chunk sooner than its own worker finishes it;
- `average`: the estimate it replaced, baseline: frames left × the job's average frame time ÷ chunks rendering.

The events do not hold Blender's progress inside the frames rendering at that moment, so the replay takes what it
would have said: the frame's time so far at its worker's pace (capped as the farm caps it). The baseline never used
it. Measures, never asserts. With `--database-url` it reads an existing farm's database and renders nothing;
without, it renders its own jobs first on a farm of its own: two workers on this machine, one of them at nice 19,
so the two go at different paces, as the machines of a real farm do.

    .venv/bin/python -m bench.eta [--database-url postgresql://…] [--jobs 3] [--frames 16]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from bench.common import make_scene, report, services
from farm.blender.progress import CEILING
from farm.db import Database
from farm.jobs import planning
from farm.models import Chunk, ChunkStatus, Event, Job, JobStatus
from tests.helpers import FarmProcesses, submit, wait_for_status


@dataclass(frozen=True)
class Guess:
    job: str
    done: float  # share of frames done when the guess was made
    actual: float  # seconds the job really had left
    span: float  # seconds from the job's first chunk starting to its last frame
    per_worker: float
    average: float


def average_eta(frames_left: int, average_ms: float, slots: int) -> float:
    """The estimate the per-worker one replaced."""
    return frames_left * average_ms / 1000 / max(1, slots)


def replay(db: Database, job: Job) -> list[Guess]:
    with db.session() as session:
        sizes = {
            c.index: c.frame_end - c.frame_start + 1
            for c in session.scalars(select(Chunk).where(Chunk.job_id == job.id))
        }
        chunk_of = {
            f: c.index
            for c in session.scalars(select(Chunk).where(Chunk.job_id == job.id))
            for f in range(c.frame_start, c.frame_end + 1)
        }
        events = session.scalars(select(Event).where(Event.job_id == job.id).order_by(Event.id)).all()
    frames = [e for e in events if e.kind == "frame" and e.new == "DONE"]
    if len(frames) < 3:
        return []
    end = max(e.created_at for e in frames)
    began = min(e.created_at for e in events if e.kind == "chunk" and e.new == ChunkStatus.RENDERING)
    total = job.frames_to_render
    guesses = []
    for moment in sorted({e.created_at for e in frames})[:-1]:
        done = [e for e in frames if e.created_at <= moment]
        times: dict[str, list[float]] = defaultdict(list)
        for e in done:
            times[e.actor or ""].append(float((e.reason or "0").split()[0]))
        average = statistics.fmean(t for ts in times.values() for t in ts)
        rendering: dict[int, tuple[str, datetime]] = {}  # chunk index → worker and start, as events had it then
        for e in events:
            if e.kind != "chunk" or e.created_at > moment:
                continue
            index = int(e.subject.rsplit("/", 1)[1])
            if e.new == ChunkStatus.RENDERING:
                rendering[index] = (e.actor or "", e.created_at)
            else:
                rendering.pop(index, None)
        done_in: dict[int, int] = defaultdict(int)
        last_done: dict[int, datetime] = {}
        for e in done:
            index = chunk_of[int(e.subject.rsplit("/", 1)[1])]
            done_in[index] += 1
            last_done[index] = max(e.created_at, last_done.get(index, e.created_at))
        in_flight = []
        for i, (worker, started) in rendering.items():
            pace = statistics.fmean(times[worker]) if times.get(worker) else None
            # what Blender's progress would have said of the frame in progress: its time so far at the worker's pace
            elapsed = (moment - max(started, last_done.get(i, started))).total_seconds() * 1000
            share = min(CEILING, elapsed / (pace or average)) if sizes[i] > done_in[i] else 0.0
            in_flight.append((max(0.0, sizes[i] - done_in[i] - share), pace))
        queued = max(0, total - len(done) - sum(f for f, _ in in_flight))
        guesses.append(
            Guess(
                job=job.id,
                done=len(done) / total,
                actual=(end - moment).total_seconds(),
                span=(end - began).total_seconds(),
                per_worker=planning.eta_seconds(queued, in_flight, average) or 0.0,
                average=average_eta(total - len(done), average, len(rendering)),
            )
        )
    return guesses


def render_jobs(env: dict[str, str], tmp: Path, jobs: int, frames: int) -> None:
    """Jobs rendered on a farm of two workers of different pace (one at nice 19), one after the other."""
    scene = make_scene(env, tmp / "eta.blend", frames=frames, width=160, height=90, samples=16)
    procs = FarmProcesses(env, tmp)
    procs.start_web()
    procs.start_worker("fast")
    procs.start_worker("slow", extra_env={"FARM_BLENDER_NICE": "19"})
    try:
        for n in range(jobs):
            job_id = submit(procs.url, scene, name=f"eta{n}", frame_start=1, frame_end=frames, chunk_size=2)
            job = wait_for_status(procs.url, job_id.json()["job"]["id"], {"COMPLETED", "FAILED"}, timeout=1800)
            assert job["status"] == "COMPLETED", job
    finally:
        procs.stop_all()


def errors(guesses: list[Guess], pick: str) -> str:
    """Mean absolute error in seconds, and as a share of the job's whole render: an error relative to the time left
    would explode on the last frame, where a tenth of a second is all that is left."""
    if not guesses:
        return "—"
    seconds = [abs(getattr(g, pick) - g.actual) for g in guesses]
    share = statistics.fmean(e / g.span for e, g in zip(seconds, guesses, strict=True) if g.span > 0)
    return f"{statistics.fmean(seconds):.1f} s ({100 * share:.0f} %)"


def summarize(db: Database) -> None:
    with db.session() as session:
        jobs = session.scalars(select(Job).where(Job.status == JobStatus.COMPLETED).order_by(Job.created_at)).all()
    guesses = [g for job in jobs for g in replay(db, job)]
    rows = []
    for label, lo, hi in (("first quarter", 0, 0.25), ("second", 0.25, 0.5), ("third", 0.5, 0.75), ("last", 0.75, 1)):
        part = [g for g in guesses if lo <= g.done < hi]
        rows.append((label, len(part), errors(part, "per_worker"), errors(part, "average")))
    rows.append(("all", len(guesses), errors(guesses, "per_worker"), errors(guesses, "average")))
    report(
        "eta",
        "ETA error against the real end of each job (mean absolute error; in brackets, of the job's render time)",
        ["frames done", "estimates", "per-worker pace (now)", "job average ÷ slots (before)"],
        rows,
        f"{len(jobs)} completed jobs replayed from their events, one estimate at each frame's end "
        f"(first made {min((j.created_at for j in jobs), default=datetime.min):%Y-%m-%d %H:%M}).",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="an existing farm's database: replay its jobs, render nothing")
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--frames", type=int, default=16)
    args = parser.parse_args()
    if args.database_url:
        summarize(Database(args.database_url))
        return
    with tempfile.TemporaryDirectory(prefix="bench-eta-") as tmp, services(Path(tmp)) as env:
        render_jobs(env, Path(tmp), args.jobs, args.frames)
        db = Database(env["FARM_DATABASE_URL"])
        summarize(db)
        db.engine.dispose()


if __name__ == "__main__":
    main()
