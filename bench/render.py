"""Render benchmark: a 48-frame job on the farm (1 and 2 worker slots; warm and fresh Blender; chunk sizes 1, 4, 16
and adaptive) against plain Blender rendering the same frames as one animation in one process.

efficiency = Σ raw frame time ÷ (wall × slots), where raw frame time is Blender's own time per frame (render start
to image written) and wall runs from the moment the job is submitted to the moment it is COMPLETED (zip stored),
or, for plain Blender, from process start to exit. Goal for the farm: ≥ 0.95.

    python -m bench.render [--frames 48] [--size 240x135] [--samples 16] [--scene YOURS.blend]

`--scene` renders your own file with its own settings (its first `--frames` frames); the demo scene otherwise.
Plain Blender renders on the device a farm worker here chooses (AUTO: the best GPU, else the CPU), to PNG files,
as the farm does.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sqlalchemy import select

from bench.common import Scene, bench_scene, plain_blender, report, run_job, scene_arguments, services
from farm.db import Database
from farm.models import Chunk, Job
from tests.helpers import FarmProcesses


def farm_job(procs: FarmProcesses, db: Database, scene: Scene, chunk_size: int | None) -> dict:
    job_id, started = run_job(
        procs,
        scene.path,
        frame_start=scene.frame_start,
        frame_end=scene.frame_end,
        **({"chunk_size": chunk_size} if chunk_size else {}),
    )
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.finished_at is not None
        sizes = [
            e - s + 1
            for s, e in session.execute(select(Chunk.frame_start, Chunk.frame_end).where(Chunk.job_id == job_id))
        ]
        return {"wall": job.finished_at.timestamp() - started, "raw": job.render_ms_total / 1000, "chunks": sizes}


def plain(scene: Scene, out: Path) -> tuple[float, float]:
    """(wall seconds, Σ frame seconds) of plain Blender rendering the frames in one process."""
    started, report = plain_blender(scene, out)
    return time.time() - started, sum(report["ms"]) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    scene_arguments(parser, frames=48)
    args = parser.parse_args()
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp, services(Path(tmp)) as env:
        scene = bench_scene(env, Path(tmp), args)
        plain_wall, plain_raw = plain(scene, Path(tmp) / "plain")
        plain_rows = [["plain Blender, one process (first)", plain_wall, plain_raw]]
        db = Database(env["FARM_DATABASE_URL"])

        def measure(label: str, procs: FarmProcesses, slots: int, chunk_size: int | None) -> None:
            got = farm_job(procs, db, scene, chunk_size)
            sizes = got["chunks"]
            shown = (
                f"{len(sizes)} × {sizes[0]}"
                if len(set(sizes)) == 1
                else f"{len(sizes)}: " + ",".join(map(str, sorted(sizes, reverse=True)))
            )
            rows.append(
                [
                    label,
                    slots,
                    shown,
                    f"{got['wall']:.1f}",
                    f"{got['raw']:.1f}",
                    f"{got['raw'] / (got['wall'] * slots):.3f}",
                    f"{got['wall'] / plain_wall:.2f}",
                ]
            )
            print(rows[-1], flush=True)

        for warm in ("1", "0"):
            procs = FarmProcesses(dict(env, FARM_WARM_BLENDER=warm), Path(tmp) / f"logs-{warm}")
            procs.log_dir.mkdir()
            try:
                procs.start_web()
                procs.start_worker("a")
                kind = "warm" if warm == "1" else "fresh"
                for chunk_size in (None, 1, 4, 16):
                    measure(f"farm, {kind}, chunks {chunk_size or 'adaptive'}", procs, 1, chunk_size)
                if warm == "1":
                    procs.start_worker("b")
                    for chunk_size in (None, 4):
                        measure(f"farm, {kind}, chunks {chunk_size or 'adaptive'}", procs, 2, chunk_size)
            finally:
                procs.stop_all()
        db.engine.dispose()
        wall, raw = plain(scene, Path(tmp) / "plain")  # again: how noisy was the machine?
        plain_rows.append(["plain Blender, one process (last)", wall, raw])
    for label, wall, raw in plain_rows:
        rows.insert(
            len(rows) if "last" in label else 0,
            [label, 1, "-", f"{wall:.1f}", f"{raw:.1f}", f"{raw / wall:.3f}", f"{wall / plain_wall:.2f}"],
        )
    report(
        "render",
        f"Render: {scene.title}",
        ["run", "slots", "chunks", "wall s", "Σ frame s", "efficiency", "wall ÷ plain"],
        rows,
        notes="""efficiency = Σ raw frame time ÷ (wall × slots). Farm wall: submit (upload, probe, plan, dispatch) to
COMPLETED (zip stored in S3); plain wall: process start to exit. Warm = FARM_WARM_BLENDER=1 (one Blender per worker
keeps the file loaded across the job's chunks); fresh = a new Blender per chunk. Adaptive: no chunk_size given, the
submission probe times a frame and chunks target FARM_CHUNK_TARGET_SECONDS (60 s) with smaller chunks at the tail.
Two slots are two workers on the same 2 cores, so each frame takes longer; the formula charges both slots.
"wall ÷ plain" compares with the first plain run; the last plain run, after the farm's, shows how much the
machine's load drifted during the benchmark (other work shared the 2 cores).""",
    )


if __name__ == "__main__":
    main()
