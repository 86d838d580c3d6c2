"""Real device detection on this (GPU-less) machine, through Blender and `farm` processes: AUTO must mean CPU, GPU
must fail saying why, and CPU workers fan out like --gpus does."""

import os
import signal
import subprocess
import sys

import pytest

from farm.blender import devices
from farm.blender.devices import NoDevice
from tests.helpers import HTTP, FarmProcesses, wait_until


def test_real_detection_on_this_machine_finds_only_the_cpu(prod_settings):
    found = devices.detect(prod_settings)
    assert [d.backend for d in found] == ["CPU"] and "threads" in found[0].name
    assert devices.choose("AUTO", "CYCLES", found).backend == "CPU"
    with pytest.raises(NoDevice, match="no GPU: Cycles found no OPTIX, CUDA, HIP, ONEAPI or METAL device"):
        devices.choose("GPU", "CYCLES", found)


def farm_command(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "farm", *args], env=dict(os.environ, **env), capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("gpus", ["all", "0,1"])
def test_worker_gpus_says_no_gpu_was_found(prod_env, gpus):
    result = farm_command("worker", "--gpus", gpus, env=prod_env)
    assert result.returncode == 1
    assert result.stderr == (
        f"farm: --gpus {gpus}: no GPU found on this machine "
        "(Cycles found no OPTIX, CUDA, HIP, ONEAPI or METAL device)\n"
    )


def test_farm_devices_lists_the_cpu(prod_env):
    result = farm_command("devices", env=prod_env)
    assert result.returncode == 0 and result.stdout.startswith("-  CPU: ") and "no GPU" in result.stderr


def test_cpu_workers_fan_out_into_registered_processes(prod_env, database, tmp_path):
    """The same fan-out --gpus uses, with CPU workers (the only kind this machine has): two child processes, each
    its own registered worker with its devices, both stopped with their parent."""
    procs = FarmProcesses(prod_env, tmp_path)
    procs.start_web()
    try:
        parent = procs._start("fanout", ["worker", "--name", "fan@test", "--cpu-workers", "2"])

        def registered() -> list[dict]:
            if parent.poll() is not None:
                raise AssertionError(procs.log("fanout")[-3000:])
            workers = HTTP.get(f"{procs.url}/api/workers", timeout=5).json()["workers"]
            mine = [w for w in workers if w["hostname"].startswith("fan-cpu") and w["status"] == "ONLINE"]
            return mine if len(mine) == 2 else []

        mine = wait_until(registered, timeout=90, what="two CPU workers to register")
        assert sorted(w["hostname"] for w in mine) == ["fan-cpu0@test", "fan-cpu1@test"]
        assert all(w["devices"] == [mine[0]["devices"][0]] and w["devices"][0].startswith("CPU: ") for w in mine)
        os.killpg(parent.pid, 0)  # still running
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(60) == 0

        def offline() -> bool:
            workers = HTTP.get(f"{procs.url}/api/workers", timeout=5).json()["workers"]
            return all(w["status"] == "OFFLINE" for w in workers if w["hostname"].startswith("fan-cpu"))

        wait_until(offline, timeout=30, what="both to go OFFLINE with their parent")
    finally:
        procs.stop_all()
