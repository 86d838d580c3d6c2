"""Runs inside Blender: the baseline of bench/render.py — plain Blender rendering an animation in one process,
the way an artist would on one machine. Reports each frame's time (render start to image written) and the wall
clock time each image was written at.

Usage: <blender> plain_blender.py -- FILE.blend OUT_DIR FRAME_START FRAME_END
"""

import json
import sys
import time

import bpy

MARK = "@@FARM@@"


def main(path, out, start, end):
    bpy.context.preferences.filepaths.use_scripts_auto_execute = False
    bpy.ops.wm.open_mainfile(filepath=path, load_ui=False, use_scripts=False)
    scene = bpy.context.scene
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
    print(MARK, json.dumps({"event": "frames", "ms": times, "written": written}), flush=True)


if __name__ == "__main__":
    args = sys.argv[sys.argv.index("--") + 1 :]
    main(args[0], args[1], int(args[2]), int(args[3]))
