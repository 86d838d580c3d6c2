"""Which compute devices a worker has, and which one a job's `device` setting (AUTO, GPU, CPU) renders on.

Cycles is asked once, at worker start, in a Blender process of its own (no file loaded, so no scripts can run);
everything after that is pure: choosing a device, pinning one worker per GPU, and naming the queue that carries
GPU-only jobs. The rule that matters: a job that asks for GPU never renders on a CPU — it fails, saying why.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from farm.blender.launcher import SCRIPTS, BlenderFailed, run_script
from farm.config import Settings

GPU_BACKENDS = ("OPTIX", "CUDA", "HIP", "ONEAPI", "METAL")  # best first
CPU = "CPU"
ENV = "FARM_WORKER_DEVICES"  # the devices one worker process may use, as JSON; set by `farm worker` for its children
NO_GPU = "Cycles found no " + ", ".join(GPU_BACKENDS[:-1]) + f" or {GPU_BACKENDS[-1]} device"


class NoDevice(ValueError):
    """The job's device cannot be had on this worker; the message says why."""


@dataclass(frozen=True)
class Device:
    backend: str  # one of GPU_BACKENDS, or CPU
    id: str  # Cycles' device id, stable across processes (it includes the PCI address for CUDA/OPTIX)
    name: str

    def describe(self) -> str:
        return f"{self.backend}: {self.name}"


@dataclass(frozen=True)
class Choice:
    """What render_script.py applies: a Cycles backend and the ids of the devices to enable, or the CPU, or
    OpenGL (EEVEE and Workbench pick their GPU through OpenGL, not Cycles)."""

    backend: str
    ids: tuple[str, ...]
    label: str  # recorded on every frame it renders

    def to_spec(self) -> dict[str, object]:
        return {"backend": self.backend, "ids": list(self.ids), "label": self.label}


def gpus(devices: Sequence[Device]) -> list[Device]:
    """The devices of the best GPU backend present (OPTIX before CUDA before HIP …); OPTIX and CUDA list the same
    cards, so only one backend is ever used at a time."""
    for backend in GPU_BACKENDS:
        found = [d for d in devices if d.backend == backend]
        if found:
            return found
    return []


def choose(want: str, engine: str | None, devices: Sequence[Device]) -> Choice:
    """AUTO: the best GPU backend, else the CPU. GPU: a GPU or NoDevice. CPU: the CPU (Cycles only)."""
    best = gpus(devices)
    if engine and engine != "CYCLES":
        if want == CPU:
            raise NoDevice(f"device CPU needs the Cycles engine; {engine} renders with OpenGL")
        if want == "GPU" and not best:
            raise NoDevice(f"device GPU was asked for, but this worker has no GPU ({NO_GPU})")
        return Choice("OpenGL", (), "OpenGL")
    if want != CPU and best:
        return backend_choice(best)
    if want == "GPU":
        raise NoDevice(f"device GPU was asked for, but this worker has no GPU: {NO_GPU}")
    cpu = next((d for d in devices if d.backend == CPU), None)
    return Choice(CPU, (cpu.id,) if cpu else (), cpu.describe() if cpu else CPU)


def backend_choice(found: Sequence[Device]) -> Choice:
    """Render on every device in `found`, all of one GPU backend (the GPU proof also asks for CUDA by name)."""
    label = found[0].backend + ": " + ", ".join(d.name for d in found)
    return Choice(found[0].backend, tuple(d.id for d in found), label)


def pin(devices: Sequence[Device], wanted: str) -> list[tuple[int, list[Device]]]:
    """`--gpus all` or `--gpus 0,2`: for each worker process, its GPU's number and its devices — exactly one GPU of
    the best backend (numbered as `farm devices` lists them) plus the CPU. Raises NoDevice naming what is missing."""
    best = gpus(devices)
    if not best:
        raise NoDevice(f"--gpus {wanted}: no GPU found on this machine ({NO_GPU})")
    if wanted.strip().lower() == "all":
        indexes = list(range(len(best)))
    else:
        try:
            indexes = [int(part) for part in wanted.split(",") if part.strip()]
        except ValueError:
            raise NoDevice(f"--gpus must be 'all' or numbers like 0,2, got {wanted!r}") from None
        if not indexes or len(set(indexes)) != len(indexes):
            raise NoDevice(f"--gpus must list each GPU once, got {wanted!r}")
        missing = [i for i in indexes if not 0 <= i < len(best)]
        if missing:
            raise NoDevice(
                f"--gpus {wanted}: no GPU {', '.join(map(str, missing))}; this machine has {len(best)} "
                f"({best[0].backend}: numbered 0-{len(best) - 1})"
            )
    cpu = cpu_only(devices)
    return [(i, [best[i], *cpu]) for i in indexes]


@dataclass(frozen=True)
class WorkerPlan:
    """One Celery worker process `farm worker --gpus/--cpu-workers` starts: its name, devices and queues."""

    name: str
    devices: list[Device]
    queues: list[str]


def worker_plans(
    devices: Sequence[Device], *, gpus: str | None, cpu_workers: int, name: str, queue: str
) -> list[WorkerPlan]:
    """One pinned worker per chosen GPU (consuming the GPU queue too), then `cpu_workers` CPU-only workers."""

    def named(tag: str) -> str:
        return name.replace("@", f"-{tag}@", 1) if "@" in name else f"{name}-{tag}"

    plans = (
        [WorkerPlan(named(f"gpu{i}"), pinned, queues_for(queue, pinned)) for i, pinned in pin(devices, gpus)]
        if gpus
        else []
    )
    cpu = cpu_only(devices)
    plans += [WorkerPlan(named(f"cpu{k}"), cpu, queues_for(queue, cpu)) for k in range(cpu_workers)]
    return plans


def cpu_only(devices: Sequence[Device]) -> list[Device]:
    return [d for d in devices if d.backend == CPU]


def gpu_queue(queue: str) -> str:
    """The queue of jobs that asked for device=GPU; only workers with a GPU consume it."""
    return f"{queue}.gpu"


def preview_queue(queue: str) -> str:
    """The queue of preview jobs (`preview=1`) sent to `queue`: every worker of `queue` consumes it, first."""
    return f"{queue}.preview"


def is_preview_queue(queue: str) -> bool:
    return queue.endswith(".preview")


def queues_for(queue: str, devices: Sequence[Device]) -> list[str]:
    """What a worker consumes, preview queues first: the broker is asked for them before the others (and their
    messages go at the top priority, farm/messaging/dispatch.py), so a preview overtakes every queued chunk."""
    served = [queue, gpu_queue(queue)] if gpus(devices) else [queue]
    return [*map(preview_queue, served), *served]


def describe(devices: Sequence[Device]) -> list[str]:
    """As stored on the worker's row and shown by GET /api/workers."""
    return [d.describe() for d in devices]


def has_gpu(described: Sequence[str]) -> bool:
    return any(d.split(":", 1)[0] in GPU_BACKENDS for d in described)


def to_env(devices: Sequence[Device]) -> str:
    return json.dumps([asdict(d) for d in devices])


def from_env(environ: Mapping[str, str] | None = None) -> list[Device] | None:
    raw = (os.environ if environ is None else environ).get(ENV)
    return [Device(**d) for d in json.loads(raw)] if raw else None


def detect(settings: Settings, timeout: float = 120) -> list[Device]:
    """Ask Cycles, in a fresh Blender process, which backends work and which devices each has; CPU last."""
    try:
        events = run_script(settings, SCRIPTS / "detect_devices.py", [], timeout)
    except BlenderFailed as exc:
        raise BlenderFailed(f"could not ask Blender which devices this machine has: {exc}") from None
    found = [e for e in events if e.get("event") == "devices"]
    if not found:
        raise NoDevice("Blender started but reported no devices")
    return [Device(backend=d["backend"], id=d["id"], name=d["name"]) for d in found[-1]["devices"]]
