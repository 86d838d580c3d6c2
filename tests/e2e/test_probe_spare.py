"""The web app's spare probe: a Blender started ahead that serves the next submission's probe, one file each, is
replaced after every probe, is not needed (a dead one is replaced by a fresh Blender), can be turned off, and goes
away with the process that started it."""

import dataclasses
import os
import subprocess
import sys

from farm.blender.launcher import SPARE_PROBE, probe_scene
from tests.helpers import alive, wait_until


def waiting_spare(settings):  # type: ignore[no-untyped-def]
    SPARE_PROBE.refill(settings)
    spare = SPARE_PROBE.child.proc if SPARE_PROBE.child else None
    assert spare is not None and spare.poll() is None
    return spare


def test_a_probe_takes_the_waiting_spare_and_leaves_a_new_one(prod_settings, tiny_blend):
    spare = waiting_spare(prod_settings)
    scene = probe_scene(prod_settings, tiny_blend)
    assert (scene["frame_start"], scene["frame_end"], scene["engine"]) == (1, 6, "CYCLES")
    assert spare.wait(30) == 0  # it read this file, probed it and exited: never a second file (killed would be -9)
    after = SPARE_PROBE.child.proc if SPARE_PROBE.child else None
    assert after is not None and after.pid != spare.pid and after.poll() is None


def test_a_dead_spare_is_replaced_by_a_fresh_blender(prod_settings, tiny_blend):
    spare = waiting_spare(prod_settings)
    spare.kill()
    spare.wait()
    assert probe_scene(prod_settings, tiny_blend)["frame_end"] == 6
    assert SPARE_PROBE.child is not None and SPARE_PROBE.child.proc.poll() is None


def test_a_spare_started_for_other_settings_is_not_used(prod_settings, tiny_blend):
    spare = waiting_spare(prod_settings)
    other = dataclasses.replace(prod_settings, blender=sys.executable)  # another Blender: this spare is not its own
    assert SPARE_PROBE.take(other) is None
    assert spare.wait(10) != 0  # stopped, not left waiting
    assert probe_scene(prod_settings, tiny_blend)["frame_end"] == 6


def test_farm_probe_spare_0_keeps_none(prod_settings, tiny_blend):
    spare = waiting_spare(prod_settings)
    spare.kill()
    spare.wait()
    off = dataclasses.replace(prod_settings, probe_spare=False)
    assert probe_scene(off, tiny_blend)["frame_end"] == 6
    assert SPARE_PROBE.child is None


def test_a_spare_goes_away_with_the_process_that_started_it(tmp_path):
    code = (
        "from farm.config import load_settings; from farm.blender.launcher import SPARE_PROBE; "
        "SPARE_PROBE.refill(load_settings(dotenv_path=None)); print(SPARE_PROBE.child.proc.pid)"
    )
    env = dict(os.environ, FARM_INSTANCE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    pid = int(out.stdout.strip())
    wait_until(lambda: not alive(pid), timeout=30, what="the orphaned spare to exit")
