"""Runs inside Blender: the baseline of bench/render.py — plain Blender rendering an animation in one process,
the way an artist would on one machine. Reports each frame's time (render start to image written) and the wall
clock time each image was written at.

SPEC is what the farm's render script applies (render_script.apply_spec): the device a farm worker would choose
on this machine and the output format, so the baseline renders on the same device, to the same files.

Usage: <blender> plain_blender.py -- FILE.blend OUT_DIR FRAME_START FRAME_END SPEC_JSON
"""

import json
import os
import sys
import time

import bpy

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "farm", "blender", "scripts")
)
from channel import emit, run  # found through the path above: Blender runs this file alone
from render_script import apply_spec


def main(path, out, start, end, spec):
    bpy.context.preferences.filepaths.use_scripts_auto_execute = False
    bpy.ops.wm.open_mainfile(filepath=path, load_ui=False, use_scripts=False)
    scene = bpy.context.scene
    apply_spec(scene, spec)
    scene.frame_start, scene.frame_end = start, end
    scene.render.filepath = out + "/"
    times, written, began = [], [], {}

    def wrote(*_):
        times.append((time.perf_counter() - began["t"]) * 1000)
        written.append(time.time())

    bpy.app.handlers.render_pre.append(lambda *_: began.__setitem__("t", time.perf_counter()))
    bpy.app.handlers.render_write.append(wrote)
    bpy.ops.render.render(animation=True)
    bpy.app.handlers.render_pre.clear()  # left in place, they keep the bpy module from exiting
    bpy.app.handlers.render_write.clear()
    emit(event="frames", ms=times, written=written)


if __name__ == "__main__":
    args = sys.argv[sys.argv.index("--") + 1 :]
    run(lambda: main(args[0], args[1], int(args[2]), int(args[3]), json.loads(args[4])))
