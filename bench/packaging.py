"""Packaging benchmark: the farm's packager (stream every frame from S3 into a zip on disk, check each sha256, write
the manifest, multipart-upload the zip) on SIZE of frames in a moto S3 server, against raw boto3 uploading a zip of
the same bytes (made beforehand, so the baseline does only the upload). Goal: throughput ratio ≥ 0.8, and peak
memory flat in the number of frames (the same bytes as 100 and as 1,000 frames).

Each side runs in a process of its own, so its peak resident memory (VmHWM) is its own.

    python -m bench.packaging [--size-mb 1024]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import boto3

from bench.common import report, services
from farm.config import load_settings
from farm.db import Database, init_db
from farm.models import Chunk, Frame, Job, JobStatus, utcnow
from farm.storage import open_storage


def make_job(env: dict[str, str], frames: int, frame_bytes: int, folder: Path) -> tuple[str, Path]:
    """A RENDERING job whose frames are all stored (random, incompressible bytes), and a zip of the same bytes."""
    settings = load_settings(env, dotenv_path=None)
    storage = open_storage(settings)
    storage.ensure_ready()
    db = Database(settings.database_url)
    init_db(db.engine)
    baseline_zip = folder / "baseline.zip"
    with db.session() as session, zipfile.ZipFile(baseline_zip, "w", zipfile.ZIP_STORED) as archive:
        job = Job(
            name="pack", status=JobStatus.RENDERING, source_key="uploads/none.blend", source_sha256="0" * 64,
            source_kind="blend", frame_start=1, frame_end=frames, chunk_size=frames, output_format="PNG",
            device="AUTO", queue=settings.queue, frames_rendered=frames,
        )  # fmt: skip
        session.add(job)
        session.flush()
        chunk = Chunk(job_id=job.id, index=0, frame_start=1, frame_end=frames, status="DONE")
        session.add(chunk)
        session.flush()
        path = folder / "frame.bin"
        for frame in range(1, frames + 1):
            data = os.urandom(frame_bytes)
            path.write_bytes(data)
            sha = hashlib.sha256(data).hexdigest()
            key = f"jobs/{job.id}/frames/{frame:04d}-{sha[:16]}.png"
            storage.put_file(key, path)
            archive.write(path, f"{frame:04d}.png")
            session.add(
                Frame(
                    job_id=job.id, chunk_id=chunk.id, frame=frame, status="DONE", render_time_ms=1.0, worker="bench",
                    device="CPU", image_key=key, sha256=sha, size=frame_bytes, finished_at=utcnow(),
                )
            )  # fmt: skip
        job_id = job.id
    path.unlink()
    db.engine.dispose()
    return job_id, baseline_zip


def peak_rss_mb() -> float:
    """This process's own peak resident memory (VmHWM; ru_maxrss would carry the forking parent's)."""
    with open("/proc/self/status") as fh:
        return next(int(ln.split()[1]) for ln in fh if ln.startswith("VmHWM:")) / 1024


def child(args: argparse.Namespace) -> None:
    """In its own process: package the job (farm) or upload the zip (raw boto3); print seconds and peak RSS."""
    settings = load_settings()
    started = time.perf_counter()
    if args.job:
        from workers import packaging
        from workers.context import WorkerContext

        ctx = WorkerContext(settings, Database(settings.database_url), open_storage(settings), devices=[])
        assert packaging.package_job(ctx, args.job, actor="bench") == "completed"
    else:
        bucket, _, prefix = settings.storage_url.removeprefix("s3://").partition("/")
        s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint_url)
        if args.naive:  # download every frame, zip them on disk, upload the zip: one step after the other
            with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(Path(tmp) / "n.zip", "w") as archive:
                pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/{args.naive}")
                for obj in (o for page in pages for o in page.get("Contents", [])):
                    s3.download_file(bucket, obj["Key"], f"{tmp}/frame")
                    archive.write(f"{tmp}/frame", obj["Key"].rsplit("/", 1)[1])
                archive.close()
                s3.upload_file(f"{tmp}/n.zip", bucket, f"{prefix}/baseline/naive.zip")
        else:
            s3.upload_file(args.zip, bucket, f"{prefix}/baseline/{Path(args.zip).name}")
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_mb": peak_rss_mb()}))


def run_child(env: dict[str, str], *args: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.packaging", "--child", *args],
        env=dict(os.environ, **env), capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--zip", help=argparse.SUPPRESS)
    parser.add_argument("--naive", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    total = args.size_mb * 2**20
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-pack-") as tmp, services(Path(tmp)) as env:
        for frames in (100, 1000):
            folder = Path(tmp) / f"f{frames}"
            folder.mkdir()
            job_id, baseline_zip = make_job(env, frames, total // frames, folder)
            raw = run_child(env, "--zip", str(baseline_zip))
            naive = run_child(env, "--naive", f"jobs/{job_id}/frames/")
            farm = run_child(env, "--job", job_id)
            mb = total / 2**20
            for label, got in (
                (f"raw boto3 upload of the zip, {frames} frames", raw),
                (f"raw boto3: download, zip, upload, {frames} frames", naive),
                (f"farm packaging, {frames} frames", farm),
            ):
                seconds = got["seconds"]
                row = [
                    f"{seconds:.1f}",
                    f"{mb / seconds:.0f}",
                    f"{raw['seconds'] / seconds:.2f}",
                    f"{got['peak_mb']:.0f}",
                ]
                rows.append([label, *row])
            baseline_zip.unlink()
            print(rows[-3:], flush=True)
            storage = open_storage(load_settings(env, dotenv_path=None))
            storage.delete_prefix(f"jobs/{job_id}/")  # free moto's memory before the next layout
            storage.delete_prefix("baseline/")
    report(
        "packaging",
        f"Packaging: {args.size_mb} MiB of frames, zipped and stored in S3 (moto server)",
        ["run", "seconds", "MiB/s", "ratio", "peak RSS MiB"],
        rows,
        notes="""The farm's packager downloads every frame from S3 (4 ahead), checks its sha256 and streams the zip
(stored, not deflated: rendered images do not compress, plus manifest.json) straight into an S3
multipart upload, so parts go up while frames come down and no zip is kept on disk. The baseline
only uploads a zip of the same bytes that already sits on disk; the middle row does with plain boto3
what the packager must do, one step after the other. ratio = baseline seconds ÷ seconds. The moto S3
server runs in the benchmark's own process on the same 2 cores, so every byte the packager moves
down and up goes through one Python process: twice the baseline's bytes.""",
    )


if __name__ == "__main__":
    main()
