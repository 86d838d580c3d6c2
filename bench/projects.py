"""Projects: re-submitting a big project after changing one file, by content (hash every file, ask the farm which it
lacks, upload that one) against uploading the project's zip; and tracing a .blend that uses many files.

    python -m bench.projects [--files 500] [--size-mb 1024] [--linked 200]

Against a real `farm web` on Postgres and a moto S3 server (bench/common.py). The project is `--files` files of
random bytes (incompressible, like textures and caches) adding up to `--size-mb`; one of them is rewritten before
the re-submission. The baseline zips the same folder (stored, the fastest zip) and uploads it in one request;
both uploads go to `PUT /api/files/<sha256>`, the farm's way in for bytes. Tracing times BAT (what `farm submit`
runs, no Blender) and the farm's probe (its own Blender, start-up included) on a .blend using `--linked` images.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import tempfile
import time
import zipfile
from pathlib import Path

from bench.common import report, services
from farm.blender.launcher import probe_scene, run_script
from farm.cli.client import FarmClient
from farm.config import load_settings
from farm.projects import packing, sending
from tests.helpers import FarmProcesses

HERE = Path(__file__).parent


def make_project(root: Path, files: int, size_mb: int) -> packing.Project:
    size = size_mb * 2**20 // files
    project = packing.Project(root, "scene.blend")
    for i in range(files):
        rel = "scene.blend" if i == 0 else f"textures/{i // 100:02d}/tex_{i:04d}.exr"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
        project.files[rel] = path
    return project


def upload_zip(api: FarmClient, project: packing.Project, archive: Path) -> tuple[float, int]:
    started = time.perf_counter()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for rel, path in project.files.items():
            zf.write(path, rel)
    digest = hashlib.sha256()
    with open(archive, "rb") as fh:
        while block := fh.read(2**20):
            digest.update(block)
    api.put_file(digest.hexdigest(), archive, lambda _: None)
    return time.perf_counter() - started, archive.stat().st_size


def tracing(env: dict[str, str], tmp: Path, linked: int) -> list[list[object]]:
    settings = load_settings(env, dotenv_path=None)
    blend = tmp / "linked" / "scene.blend"
    blend.parent.mkdir()
    run_script(settings, HERE / "linked_files.py", [str(blend), str(linked)], 600)
    started = time.perf_counter()
    traced = packing.pack(blend, tmp / "pack")
    bat = time.perf_counter() - started
    started = time.perf_counter()
    probed = probe_scene(settings, blend)
    blender = time.perf_counter() - started
    return [
        [f"trace {linked} linked files: BAT (`farm submit`)", f"{len(traced.files) - 1} files", f"{bat:.2f} s", "< 2"],
        [
            f"trace {linked} linked files: the farm's Blender (probe, start-up included)",
            f"{len(probed['dependencies'])} files",
            f"{blender:.2f} s",
            "< 2 s",
        ],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--linked", type=int, default=200)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="bench-projects-") as name,
        services(Path(name), FARM_SECRET_KEY=secrets.token_hex(32), FARM_MAX_UPLOAD_MB=str(4 * args.size_mb)) as env,
    ):
        tmp = Path(name)
        (tmp / "logs").mkdir()
        procs = FarmProcesses(env, tmp / "logs")
        procs.start_web()
        try:
            api = FarmClient(procs.url, timeout=3600, token=procs.admin_token)
            project = make_project(tmp / "project", args.files, args.size_mb)
            first = sending.send(api, project)
            changed = project.files[f"textures/00/tex_{args.files // 2 % 100:04d}.exr"]
            changed.write_bytes(os.urandom(changed.stat().st_size))
            started = time.perf_counter()
            again = sending.send(api, project)
            resend = time.perf_counter() - started
            zip_seconds, zip_bytes = upload_zip(api, project, tmp / "project.zip")
            rows: list[list[object]] = [
                ["first submission (every file)", f"{first.uploaded} files, {first.uploaded_bytes >> 20} MiB", "", ""],
                ["baseline: zip (stored) and upload it", f"{zip_bytes / 2**20:.0f} MiB", f"{zip_seconds:.2f} s", ""],
                [
                    "re-submit with one file changed (hash all, check, upload 1)",
                    f"{again.uploaded} file, {again.uploaded_bytes / 2**20:.1f} MiB",
                    f"{resend:.2f} s",
                    f"bytes {zip_bytes / max(again.uploaded_bytes, 1):.0f}× fewer (≥ 20), "
                    f"{zip_seconds / resend:.1f}× faster (≥ 10)",
                ],
                *tracing(env, tmp, args.linked),
            ]
        finally:
            procs.stop_all()
    report(
        "projects",
        f"Projects: {args.files} files, {args.size_mb} MiB, one changed; tracing {args.linked} linked files",
        ["run", "sent", "time", "ratio / goal"],
        rows,
    )


if __name__ == "__main__":
    main()
