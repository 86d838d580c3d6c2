"""Files that try to reach outside their job. Blender prints a failing driver's expression verbatim, so a .blend can
print any line, including every event format the farm ever read from Blender's output; events now travel over a
pipe of the process's own, and the worker takes no path from Blender. Blender also runs with an allow-listed
environment (no secrets), in a folder of its own, optionally capped, and the file's own writes are confined."""

import dataclasses
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from farm.blender.launcher import PROBE_SCRIPT, blender_command, launch, probe_scene
from tests.helpers import (
    HTTP,
    alive,
    blender_pids,
    build_blend,
    farm_frames,
    plain_blender_frames,
    spare_blenders,
    submit,
    wait_for_status,
    wait_until,
)

SECRET = "do-not-leak-this-secret"


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file outside every job's folder that a forged event names: it must never be read, moved or deleted."""
    path = tmp_path_factory.mktemp("outside") / "secret.txt"
    path.write_text(SECRET)
    return path


@pytest.fixture(scope="module")
def forged_blend(prod_settings, sentinel, tmp_path_factory):  # type: ignore[no-untyped-def]
    return build_blend(
        prod_settings, "forged_events", tmp_path_factory.mktemp("forged") / "forged.blend", str(sentinel)
    )


@pytest.fixture(scope="module")
def driver_blend(prod_settings, tmp_path_factory):  # type: ignore[no-untyped-def]
    return build_blend(prod_settings, "python_driver", tmp_path_factory.mktemp("driver") / "driver.blend")


def assert_untouched(sentinel: Path) -> None:
    assert sentinel.is_file() and not sentinel.is_symlink() and sentinel.read_text() == SECRET


def test_the_probe_ignores_forged_events_and_never_hangs_at_exit(prod_settings, forged_blend, sentinel, tmp_path):
    settings = dataclasses.replace(prod_settings, probe_spare=False)
    scene = probe_scene(settings, forged_blend, {"frame": 2, "out": str(tmp_path), "output_format": "PNG"})
    # The forged `error` was not believed (it would have raised), nor the forged `probe_frame` of frame 1.
    assert scene["probe_frame"] == 2 and scene["probe_frame_ms"] > 0
    assert (tmp_path / "probe.png").is_file()
    assert_untouched(sentinel)


def test_a_python_driver_probes_in_seconds(prod_settings, driver_blend, tmp_path):
    """bpy hangs at exit after opening such a file; every farm script leaves with os._exit."""
    settings = dataclasses.replace(prod_settings, probe_spare=False, probe_timeout_seconds=60)
    for render in (None, {"frame": 1, "out": str(tmp_path), "output_format": "PNG"}):
        scene = probe_scene(settings, driver_blend, render)
        assert scene["frame_end"] == 6


@pytest.mark.parametrize("kind", ["forged_events", "python_driver"])
@pytest.mark.parametrize("warm", ["1", "0"])
def test_hostile_files_render_like_plain_blender(own_farm, prod_settings, sentinel, tmp_path, request, kind, warm):
    """Through the API, the probe (its frame is kept) and the worker's one-shot or warm Blender: the job completes
    within seconds, every frame is Blender's own render of the file, and the file named by forged events is left as
    it was. The forged lines are in the chunk logs, for people to read."""
    blend = request.getfixturevalue("forged_blend" if kind == "forged_events" else "driver_blend")
    own_farm.start_worker("w", {"FARM_WARM_BLENDER": warm, "FARM_FRAME_TIMEOUT_SECONDS": "60"})
    job_id = submit(own_farm.url, blend, name=kind, frame_start=1, frame_end=4).json()["job"]["id"]
    job = wait_for_status(own_farm.url, job_id, {"COMPLETED", "FAILED"}, timeout=120)
    assert job["status"] == "COMPLETED", job
    assert farm_frames(own_farm.url, job_id) == plain_blender_frames(prod_settings, blend, tmp_path, 1, 4)
    assert_untouched(sentinel)
    chunks = HTTP.get(f"{own_farm.url}/api/jobs/{job_id}/chunks", timeout=10).json()["chunks"]
    assert all(c["attempts"] == 1 and c["status"] == "DONE" for c in chunks)
    logs = [HTTP.get(c["log_url"], timeout=10).text for c in chunks if c.get("log_url")]
    if kind == "forged_events":
        assert any(f'@@FARM@@ {{"event": "frame", "frame": 1, "path": "{sentinel}"' in log for log in logs)
    # Users read the logs and the API: neither names the worker's folders nor the source's content hash.
    source_hash = hashlib.sha256(blend.read_bytes()).hexdigest()
    assert all(own_farm.env["FARM_INSTANCE_DIR"] not in log and source_hash not in log for log in logs)
    assert any('Read blend: "<project>/' in log for log in logs)
    assert source_hash not in json.dumps(job)
    # One-shot or warm, no Blender of the job lingers once it is done (a hang at exit would keep it). The logs'
    # copies of events are for people: the forged `ready` (pid 1) is among them, and is left out here.
    pids = blender_pids(own_farm.url, job_id) - {1}
    assert pids
    wait_until(lambda: not any(alive(p) for p in pids), timeout=15, what="the job's Blender to exit")
    projects = Path(own_farm.env["FARM_INSTANCE_DIR"]) / "cache" / "projects"  # and its project folder goes too
    wait_until(lambda: not any(projects.iterdir()), timeout=15, what="the job's project folder to be removed")


def test_blender_gets_an_allow_listed_environment_a_folder_of_its_own_and_the_caps(prod_settings, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("FARM_SECRET_KEY", SECRET)
    monkeypatch.setenv("FARM_DATABASE_URL", f"postgresql://farm:{SECRET}@db/farm")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    settings = dataclasses.replace(prod_settings, blender_max_memory_mb=6144, blender_nice=7)
    child = launch(settings, blender_command(settings, PROBE_SCRIPT, ["--wait"]), stdin=subprocess.PIPE)
    try:
        environ = Path(f"/proc/{child.proc.pid}/environ").read_bytes()
        env = dict(item.split("=", 1) for item in environ.decode().split("\0") if item)
        assert SECRET not in environ.decode()
        assert not {k for k in env if k.startswith(("AWS_", "FARM_"))} - {"FARM_EVENTS_FD"}
        assert env["LC_ALL"] == "C.UTF-8" and env["PATH"]
        home = Path(env["HOME"])
        assert home == child.home and home.parent == settings.cache_dir / "blender"
        assert Path(os.readlink(f"/proc/{child.proc.pid}/cwd")) == home
        limits = Path(f"/proc/{child.proc.pid}/limits").read_text()
        assert [ln.split()[3] for ln in limits.splitlines() if ln.startswith("Max address space")] == [
            str(6144 * 2**20)
        ]
        nice = int(Path(f"/proc/{child.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[16])
        assert nice == os.nice(0) + 7
    finally:
        child.close()
    assert not home.exists()  # its folder goes with it


def test_a_worker_blender_holds_none_of_the_workers_secrets(own_farm):
    """The real thing: a live worker (S3 keys, database and broker URLs in its environment) and its spare Blender."""
    own_farm.start_worker("w")
    worker = own_farm.procs["worker-w"].pid
    found = wait_until(lambda: spare_blenders(worker), timeout=30, what="the worker's spare Blender")
    for pid in found:
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode()
        for secret in ("AWS_SECRET_ACCESS_KEY", "FARM_DATABASE_URL", "FARM_BROKER_URL", own_farm.env["FARM_QUEUE"]):
            assert secret not in environ


def test_file_output_nodes_write_nothing_outside(prod_settings, tmp_path):
    outside = tmp_path / "outside"
    blend = build_blend(prod_settings, "file_output", tmp_path / "job" / "out.blend", str(outside))
    settings = dataclasses.replace(prod_settings, probe_spare=False)
    work = tmp_path / "work"
    work.mkdir()
    assert probe_scene(settings, blend, {"frame": 1, "out": str(work), "output_format": "PNG"})["probe_frame"] == 1
    assert not outside.exists()
    assert sorted(p.name for p in work.iterdir()) == ["probe.png"]
