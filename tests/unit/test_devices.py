"""Device choice and one-worker-per-GPU pinning: the pure rules on device lists as Cycles reports them (the real
detection on this GPU-less machine is in tests/e2e/test_devices_here.py)."""

import pytest

from farm.blender import devices
from farm.blender.devices import Device, NoDevice

CPU = Device("CPU", "CPU", "AMD EPYC (2 threads)")
OPTIX = [Device("OPTIX", f"OPTIX_0000:0{i}:00", f"RTX 4090 #{i}") for i in range(3)]
CUDA = [Device("CUDA", f"CUDA_0000:0{i}:00", f"RTX 4090 #{i}") for i in range(3)]
HIP = [Device("HIP", "HIP_0000:0a:00", "Radeon PRO W7900")]
METAL = [Device("METAL", "METAL_0", "Apple M3 Max")]


@pytest.mark.parametrize(
    ("found", "want", "backend", "ids"),
    [
        ([*CUDA, *OPTIX, CPU], "AUTO", "OPTIX", [d.id for d in OPTIX]),  # OPTIX beats CUDA on the same cards
        ([*CUDA, CPU], "AUTO", "CUDA", [d.id for d in CUDA]),
        ([*HIP, *METAL, CPU], "GPU", "HIP", [HIP[0].id]),
        ([*METAL, CPU], "AUTO", "METAL", ["METAL_0"]),
        ([*OPTIX, CPU], "CPU", "CPU", ["CPU"]),  # CPU forces the CPU even with GPUs present
        ([CPU], "AUTO", "CPU", ["CPU"]),
    ],
)
def test_choose_picks_the_best_backend(found, want, backend, ids):
    choice = devices.choose(want, "CYCLES", found)
    assert (choice.backend, list(choice.ids)) == (backend, ids)
    assert choice.label.startswith(backend)


def test_gpu_on_a_cpu_only_worker_fails_saying_why():
    with pytest.raises(NoDevice, match="device GPU was asked for, but this worker has no GPU: Cycles found no OPTIX"):
        devices.choose("GPU", "CYCLES", [CPU])


@pytest.mark.parametrize(
    ("engine", "want", "found", "outcome"),
    [
        ("BLENDER_WORKBENCH", "AUTO", [CPU], "OpenGL"),
        ("BLENDER_EEVEE_NEXT", "GPU", [*CUDA, CPU], "OpenGL"),
        ("BLENDER_EEVEE_NEXT", "GPU", [CPU], "no GPU"),
        ("BLENDER_WORKBENCH", "CPU", [*CUDA, CPU], "needs the Cycles engine"),
    ],
)
def test_non_cycles_engines(engine, want, found, outcome):
    if outcome == "OpenGL":
        assert devices.choose(want, engine, found).backend == "OpenGL"
    else:
        with pytest.raises(NoDevice, match=outcome):
            devices.choose(want, engine, found)


def test_gpus_0_2_starts_two_workers_each_pinned_to_one_card():
    plans = devices.worker_plans([*CUDA, *OPTIX, CPU], gpus="0,2", cpu_workers=1, name="farm@%h", queue="farm")
    assert [p.name for p in plans] == ["farm-gpu0@%h", "farm-gpu2@%h", "farm-cpu0@%h"]
    assert [p.devices for p in plans] == [[OPTIX[0], CPU], [OPTIX[2], CPU], [CPU]]
    gpu_queues = ["farm.preview", "farm.gpu.preview", "farm", "farm.gpu"]  # previews first
    assert [p.queues for p in plans] == [gpu_queues, gpu_queues, ["farm.preview", "farm"]]
    # each GPU worker renders AUTO and GPU jobs on its own card only
    assert [list(devices.choose("GPU", "CYCLES", p.devices).ids) for p in plans[:2]] == [[OPTIX[0].id], [OPTIX[2].id]]
    # and its devices survive the trip through the environment to its process
    env = {devices.ENV: devices.to_env(plans[1].devices)}
    assert devices.from_env(env) == plans[1].devices


@pytest.mark.parametrize(
    ("found", "gpus", "message"),
    [
        ([CPU], "all", "no GPU found on this machine"),
        ([*CUDA, CPU], "0,3", "no GPU 3; this machine has 3 (CUDA: numbered 0-2)"),
        ([*CUDA, CPU], "1,1", "each GPU once"),
        ([*CUDA, CPU], "first", "'all' or numbers"),
    ],
)
def test_bad_gpu_lists_are_refused(found, gpus, message):
    with pytest.raises(NoDevice, match=message.replace("(", r"\(").replace(")", r"\)")):
        devices.pin(found, gpus)


def test_gpus_all_uses_every_card():
    assert [gpu.id for gpu, *_ in (d for _, d in devices.pin([*HIP, CPU], "all"))] == [HIP[0].id]


def test_has_gpu_reads_the_stored_descriptions():
    assert devices.has_gpu(devices.describe([*CUDA, CPU])) and not devices.has_gpu(devices.describe([CPU]))
