"""Split-still benchmark: one Cycles still of the demo scene rendered whole by one worker slot, then split in 2 and
4 parts (`split`) over two workers, each merged by the packager; wall time from submission to COMPLETED (zip stored).

    python -m bench.split [--size 320x180] [--samples 64]

The whole still is measured first and last (how much the machine's load drifted). Σ Blender s is the render time
the farm recorded for the still: the parts' together for a split one. PSNR compares each split still with the
first whole one (same total samples; identical noise but for float rounding, so high).
"""

from __future__ import annotations

import argparse
import io
import math
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import make_scene, report, run_job, services
from farm.db import Database
from farm.models import Job
from tests.helpers import HTTP, FarmProcesses, get_job


def still(procs: FarmProcesses, job_id: str) -> np.ndarray:
    job = get_job(procs.url, job_id)
    zipped = zipfile.ZipFile(io.BytesIO(HTTP.get(job["asset"]["url"], timeout=60).content))
    return np.asarray(Image.open(io.BytesIO(zipped.read("0001.png"))), dtype=float)


def psnr(a: np.ndarray, b: np.ndarray) -> str:
    error = float(np.mean((a - b) ** 2))
    return "identical" if error == 0 else f"{10 * math.log10(255**2 / error):.1f} dB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="320x180", help="the demo scene's resolution")
    parser.add_argument("--samples", type=int, default=64, help="Cycles samples of the still")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-split-") as tmp, services(Path(tmp)) as env:
        blend = make_scene(env, Path(tmp) / "still.blend", frames=1, width=width, height=height, samples=args.samples)
        db = Database(env["FARM_DATABASE_URL"])
        procs = FarmProcesses(env, Path(tmp) / "logs")
        procs.log_dir.mkdir()
        whole: np.ndarray | None = None
        try:
            procs.start_web()
            procs.start_worker("a")
            procs.start_worker("b")
            for label, parts in (("whole (first)", 1), ("split", 2), ("split", 4), ("whole (last)", 1)):
                fields = {"split": parts} if parts > 1 else {"chunk_size": 1}
                job_id, started = run_job(procs, blend, frame_start=1, frame_end=1, **fields)
                with db.session() as session:
                    job = session.get(Job, job_id)
                    assert job is not None and job.finished_at is not None
                    wall, blender = job.finished_at.timestamp() - started, job.render_ms_total / 1000
                image = still(procs, job_id)
                whole = image if whole is None else whole
                rows.append([label, parts, f"{wall:.1f}", f"{blender:.1f}", psnr(image, whole)])
                print(rows[-1], flush=True)
        finally:
            procs.stop_all()
            db.engine.dispose()
    baseline = float(rows[0][2])
    for row in rows:
        row.insert(3, f"{float(row[2]) / baseline:.2f}")
    report(
        "split",
        f"Split still: the demo scene, {width}×{height}, Cycles {args.samples} samples, CPU",
        ["run", "slots (parts)", "wall s", "wall ÷ whole", "Σ Blender s", "PSNR vs whole"],
        rows,
        notes="""Two workers of one slot each, on the same machine. Wall: submission (upload, probe, plan, dispatch)
to COMPLETED; a split still's includes the packager's merge (one more Blender, which reads the parts' EXRs). Each
part opens the file afresh and renders its share of the samples; Blender's own render time per part shrinks with
its samples, but on a machine whose every core one Blender already uses, two at once only share the cores: split
pays where the parts land on different machines.""",
    )


if __name__ == "__main__":
    main()
