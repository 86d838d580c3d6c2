"""Split-still benchmark: one Cycles still of the demo scene rendered whole by one worker slot, and split in 2
and 4 parts (`split`) over two workers, each merged by the packager; wall time from submission to COMPLETED (zip
stored).

    python -m bench.split [--size 240x135] [--samples 64] [--rounds 3]

Each round renders the three in turn (whole, 2, 4), so a drift in the machine's load falls on all of them; the table
gives the median of the rounds and their range. Σ Blender s is the render time the farm recorded for the still: the
parts' together for a split one. PSNR compares each split still with the first whole one (same total samples).
"""

from __future__ import annotations

import argparse
import io
import math
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import make_scene, median, report, run_job, services
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
    parser.add_argument("--size", default="240x135", help="the demo scene's resolution")
    parser.add_argument("--samples", type=int, default=64, help="Cycles samples of the still")
    parser.add_argument("--rounds", type=int, default=3, help="times each of whole, 2 and 4 parts is rendered")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    runs: dict[int, list[tuple[float, float, str]]] = {1: [], 2: [], 4: []}
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
            for _ in range(args.rounds):
                for parts in runs:
                    fields = {"split": parts} if parts > 1 else {"chunk_size": 1}
                    job_id, started = run_job(procs, blend, frame_start=1, frame_end=1, **fields)
                    with db.session() as session:
                        job = session.get(Job, job_id)
                        assert job is not None and job.finished_at is not None
                        wall, blender = job.finished_at.timestamp() - started, job.render_ms_total / 1000
                    image = still(procs, job_id)
                    whole = image if whole is None else whole
                    runs[parts].append((wall, blender, psnr(image, whole)))
                    print(parts, runs[parts][-1], flush=True)
        finally:
            procs.stop_all()
            db.engine.dispose()
    baseline = median([wall for wall, _, _ in runs[1]])
    rows = []
    for parts, measured in runs.items():
        walls = [wall for wall, _, _ in measured]
        rows.append(
            [
                "whole" if parts == 1 else "split",
                parts,
                f"{median(walls):.1f} ({min(walls):.1f}–{max(walls):.1f})",
                f"{median(walls) / baseline:.2f}",
                f"{median([blender for _, blender, _ in measured]):.1f}",
                ", ".join(sorted({quality for _, _, quality in measured})),
            ]
        )
    report(
        "split",
        f"Split still: the demo scene, {width}×{height}, Cycles {args.samples} samples, CPU, {args.rounds} rounds",
        ["run", "slots (parts)", "wall s, median (range)", "wall ÷ whole", "Σ Blender s", "PSNR vs whole"],
        rows,
        notes="""Two workers of one slot each, on the same machine. Wall: submission (upload, probe, plan, dispatch)
to COMPLETED; a split still's includes the packager's merge (one more Blender, which reads the parts' EXRs). Each
part opens the file afresh and renders its share of the samples; on a machine whose every core one Blender already
uses, two at once only share the cores: split pays where the parts land on different machines."""
        + f" The machine's load average (1, 5, 15 min) at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}.",
    )


if __name__ == "__main__":
    main()
