"""Packaging benchmark: the farm's packager (check each frame's sha256, zip the frames with a manifest, stream the
zip into an S3 multipart upload) on SIZE of frames in a moto S3 server, against raw boto3 uploading a zip of the
same bytes (made beforehand, so the baseline does only the upload). The packager runs twice: on frames this machine
rendered (kept in its frame cache, as a worker keeps them) and on frames rendered elsewhere (downloaded from S3).
Goal: throughput ratio ≥ 0.8, and peak memory flat in the number of frames (the same bytes as 100 and as 1,000
frames).

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
from farm.jobs import states
from farm.storage import open_storage
from tests.rows import add_job
from workers.frame_cache import FrameCache


def make_jobs(env: dict[str, str], frames: int, frame_bytes: int, folder: Path) -> tuple[list[str], Path]:
    """Two jobs over the same stored frames (random, incompressible bytes), each frame recorded as a worker records
    it; a zip of the same bytes; and the frames kept in the frame cache `folder/kept`, as the worker that rendered
    them keeps them."""
    settings = load_settings(env, dotenv_path=None)
    storage = open_storage(settings)
    storage.ensure_ready()
    db = Database(settings.database_url)
    init_db(db.engine)
    baseline_zip = folder / "baseline.zip"
    kept = FrameCache(folder / "kept", 2**40)
    with db.session() as session:
        job_ids = [add_job(session, frames, frames, name="pack", queue=settings.queue) for _ in range(2)]
    path = folder / "frame.bin"
    with zipfile.ZipFile(baseline_zip, "w", zipfile.ZIP_STORED) as archive:
        for frame in range(1, frames + 1):
            data = os.urandom(frame_bytes)
            path.write_bytes(data)
            sha = hashlib.sha256(data).hexdigest()
            key = f"jobs/{job_ids[0]}/frames/{frame:04d}-{sha[:16]}.png"
            storage.put_file(key, path)
            archive.write(path, f"{frame:04d}.png")
            kept.keep(path, sha, frame_bytes)
            with db.session() as session:
                for job_id in job_ids:
                    states.frame_done(
                        session, job_id, frame, worker="bench", render_time_ms=1.0, device="CPU", image_key=key,
                        sha256=sha, size=frame_bytes,
                    )  # fmt: skip
    db.engine.dispose()
    return job_ids, baseline_zip


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

        kept = FrameCache(Path(args.kept), 2**40) if args.kept else FrameCache(settings.cache_dir / "none", 0)
        ctx = WorkerContext(settings, Database(settings.database_url), open_storage(settings), devices=[], frames=kept)
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
    cpu = os.times()
    print(json.dumps({"seconds": seconds, "peak_mb": peak_rss_mb(), "cpu": cpu.user + cpu.system}))


def run_child(env: dict[str, str], *args: str) -> dict[str, float]:
    """The child's figures, and the CPU this process (the S3 server, idle but for the child's requests) spent."""
    before = os.times()
    out = subprocess.run(
        [sys.executable, "-m", "bench.packaging", "--child", *args],
        env=dict(os.environ, **env), capture_output=True, text=True, check=True,
    )  # fmt: skip
    after = os.times()
    server = after.user + after.system - before.user - before.system
    return dict(json.loads(out.stdout.strip().splitlines()[-1]), server_cpu=server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--zip", help=argparse.SUPPRESS)
    parser.add_argument("--naive", help=argparse.SUPPRESS)
    parser.add_argument("--kept", help=argparse.SUPPRESS)
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
            (job_id, other_job), baseline_zip = make_jobs(env, frames, total // frames, folder)
            raw = run_child(env, "--zip", str(baseline_zip))
            naive = run_child(env, "--naive", f"jobs/{job_id}/frames/")
            downloaded = run_child(env, "--job", job_id)
            kept = run_child(env, "--job", other_job, "--kept", str(folder / "kept"))
            mb = total / 2**20
            for label, got in (
                (f"raw boto3 upload of the zip, {frames} frames", raw),
                (f"raw boto3: download, zip, upload, {frames} frames", naive),
                (f"farm packaging, {frames} frames rendered elsewhere (downloaded)", downloaded),
                (f"farm packaging, {frames} frames rendered on this machine (kept)", kept),
            ):
                seconds = got["seconds"]
                row = [
                    f"{seconds:.1f}",
                    f"{mb / seconds:.0f}",
                    f"{raw['seconds'] / seconds:.2f}",
                    f"{got['peak_mb']:.0f}",
                    f"{got['cpu']:.1f}",
                    f"{got['server_cpu']:.1f}",
                ]
                rows.append([label, *row])
            baseline_zip.unlink()
            print(rows[-4:], flush=True)
            storage = open_storage(load_settings(env, dotenv_path=None))
            for job in (job_id, other_job):
                storage.delete_prefix(f"jobs/{job}/")  # free moto's memory before the next layout
            storage.delete_prefix("baseline/")
    report(
        "packaging",
        f"Packaging: {args.size_mb} MiB of frames, zipped and stored in S3 (moto server)",
        ["run", "seconds", "MiB/s", "ratio", "peak RSS MiB", "client CPU s", "S3 server CPU s"],
        rows,
        notes="""The farm's packager takes each frame (4 ahead, on threads) from this machine's frame cache, where the
worker that rendered it kept it, or else downloads it from S3; checks its sha256; and streams the zip
(stored, not deflated: rendered images do not compress, plus manifest.json) straight into an S3
multipart upload, so parts go up while frames are read and no zip is kept on disk. On a one-machine
farm every frame is kept; on a bigger one, those the packager's machine rendered. The baseline only
uploads a zip of the same bytes that already sits on disk; the second row does with plain boto3 what
a packager without kept frames must do, one step after the other. ratio = baseline seconds ÷
seconds. The moto S3 server runs in the benchmark's own process on the same cores, so a packager that
downloads moves twice the baseline's bytes through that one Python process.""",
    )


if __name__ == "__main__":
    main()
