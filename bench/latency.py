"""Latency benchmark: submit → first frame stored on an idle farm, minus what plain Blender itself needs for that
frame (process start, file load, first render, image written), measured in the same invocation. Goal ≤ 1 s.

    python -m bench.latency [--repeats 3] [--size 240x135] [--samples 16] [--scene YOURS.blend]

`--scene` times your own file's first frames (4 per job) with its own settings; the demo scene otherwise.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from sqlalchemy import func, select

from bench.common import Scene, bench_scene, median, plain_blender, report, run_job, scene_arguments, services
from farm.db import Database
from farm.models import Frame
from tests.helpers import FarmProcesses


def plain_first_frame(scene: Scene, out: Path) -> float:
    """Seconds from starting plain Blender to its first image written."""
    started, report = plain_blender(scene, out, frames=1)
    return report["written"][0] - started


def farm_first_frame(procs: FarmProcesses, db: Database, scene: Scene, chunk_size: int | None) -> float:
    """Seconds from the start of the submission request to the first frame recorded as stored."""
    job_id, started = run_job(
        procs,
        scene.path,
        frame_start=scene.frame_start,
        frame_end=scene.frame_end,
        **({"chunk_size": chunk_size} if chunk_size else {}),
    )
    with db.session() as session:
        first = session.scalar(select(func.min(Frame.finished_at)).where(Frame.job_id == job_id))
    assert first is not None
    return first.timestamp() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    scene_arguments(parser, frames=4)
    args = parser.parse_args()
    plain: list[float] = []
    farm: dict[str, list[float]] = {"chunk_size 4": [], "adaptive": []}
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp, services(Path(tmp)) as env:
        scene = bench_scene(env, Path(tmp), args)
        procs = FarmProcesses(env, Path(tmp))
        db = Database(env["FARM_DATABASE_URL"])
        try:
            procs.start_web()
            procs.start_worker("idle")
            for _ in range(args.repeats):
                plain.append(plain_first_frame(scene, Path(tmp) / "plain"))
                farm["chunk_size 4"].append(farm_first_frame(procs, db, scene, 4))
                farm["adaptive"].append(farm_first_frame(procs, db, scene, None))
        finally:
            procs.stop_all()
            db.engine.dispose()
    base = median(plain)
    rows: list[list[object]] = [["plain Blender: start → first image written", f"{base:.2f}", "-"]]
    for label, values in farm.items():
        rows.append(
            [f"farm, {label}: submit → first frame stored", f"{median(values):.2f}", f"{median(values) - base:.2f}"]
        )
    report(
        "latency",
        f"Latency: the first frame of an idle farm, jobs of {scene.title}",
        ["run", f"seconds (median of {args.repeats})", "farm overhead s"],
        rows,
        notes="""Farm: from the start of the HTTP submission (upload, scene probe, planning, dispatch) to the first
frame's row marked DONE after its image is in S3 (moto), with one idle worker whose spare Blender is started with
no file loaded, and a web process whose spare probe Blender is started too (plain Blender pays that start-up; the
farm pays it ahead, while it is idle), which is why the farm can beat plain Blender to the first frame.
The adaptive submission's probe renders the first frame with the job's settings to size the chunks, and that
frame is kept as the job's own: it is stored before the submission answers.""",
    )


if __name__ == "__main__":
    main()
