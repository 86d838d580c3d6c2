"""Runs inside Blender: the baseline the tests compare the farm's frames with. Plain Blender, scripts off, playing
the file from `START` to `END` in one process as an artist scrubbing the timeline would (each frame made current in
turn, so simulations step through every frame), rendering each to `OUT/<frame:04d>.png` on the CPU.

`blender -b -a` (an animation render) is not used: under bpy 4.5 it does not step unbaked rigid body and Geometry
Nodes simulations, which then render as they are on the first frame.

Usage: <blender> plain_render.py -- FILE.blend OUT START END [trusted]   (trusted: the file's scripts on)
"""

import os
import sys

import bpy

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "farm", "blender", "scripts")
)
from channel import emit, run  # found through the path above
from render_script import apply_spec


def main(path, out, start, end, trusted):
    bpy.context.preferences.filepaths.use_scripts_auto_execute = trusted
    bpy.ops.wm.open_mainfile(filepath=path, load_ui=False, use_scripts=trusted)
    scene = bpy.context.scene
    apply_spec(scene, {"device": {"backend": "CPU", "ids": [], "label": "CPU"}, "output_format": "PNG"})
    for frame in range(start, end + 1):
        scene.frame_set(frame)
        scene.render.filepath = os.path.join(out, f"{frame:04d}")
        bpy.ops.render.render(write_still=True)
    emit(event="rendered", frames=end - start + 1)
    return 0


if __name__ == "__main__":
    args = sys.argv[sys.argv.index("--") + 1 :]
    run(lambda: main(args[0], args[1], int(args[2]), int(args[3]), args[4:] == ["trusted"]))
