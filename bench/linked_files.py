"""Runs inside Blender: a .blend that uses N image files (`//tex/img_0000.png`, …) on N planes, for the tracing
benchmark. The images are written too, so every dependency is found.

Usage: <blender> linked_files.py -- OUT.blend N
"""

import os
import sys

import bpy

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "farm", "blender", "scripts")
)
from channel import emit, run  # found through the path above


def main(out, count):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.save_as_mainfile(filepath=out)
    folder = os.path.join(os.path.dirname(out), "tex")
    os.makedirs(folder, exist_ok=True)
    bpy.ops.object.camera_add(location=(0, -30, 0), rotation=(1.5708, 0, 0))
    bpy.context.scene.camera = bpy.context.active_object
    for i in range(count):
        image = bpy.data.images.new(f"img_{i:04d}", 4, 4)
        image.filepath_raw = os.path.join(folder, f"img_{i:04d}.png")
        image.file_format = "PNG"
        image.save()
        image.filepath = f"//tex/img_{i:04d}.png"
        mat = bpy.data.materials.new(f"m{i}")
        mat.use_nodes = True
        tex = mat.node_tree.nodes.new("ShaderNodeTexImage")
        tex.image = image
        bpy.ops.mesh.primitive_plane_add(size=0.5, location=(i % 20 - 10, 0, i // 20 - 5))
        bpy.context.active_object.data.materials.append(mat)
    bpy.ops.wm.save_as_mainfile(filepath=out)
    emit(event="saved", path=out)
    return 0


if __name__ == "__main__":
    args = sys.argv[sys.argv.index("--") + 1 :]
    run(lambda: main(args[0], int(args[1])))
