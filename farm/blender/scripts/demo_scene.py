"""Runs inside Blender: build the demo scene (a few animated objects, a camera, a sun) and save it as a .blend.

Usage: <blender> demo_scene.py -- OUT.blend [frames=48] [width=320] [height=180] [samples=16]
"""

import math
import os
import sys

import bpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from channel import emit, run


def material(name, rgb, metallic=0.0, roughness=0.4):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (*rgb, 1.0)
    bsdf.inputs["Metallic"].default_value = metallic
    bsdf.inputs["Roughness"].default_value = roughness
    return mat


def add(op, name, mat, **kwargs):
    op(**kwargs)
    obj = bpy.context.active_object
    obj.name = name
    obj.data.materials.append(mat)
    return obj


def build(frames, width, height, samples):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.name = "Demo"
    scene.frame_start, scene.frame_end = 1, frames
    render = scene.render
    render.engine = "CYCLES"
    render.resolution_x, render.resolution_y, render.resolution_percentage = width, height, 100
    render.image_settings.file_format = "PNG"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.cycles.max_bounces = 4

    world = bpy.data.worlds.new("Sky")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.35, 0.45, 0.6, 1.0)
    world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.6
    scene.world = world

    add(bpy.ops.mesh.primitive_plane_add, "Ground", material("Ground", (0.8, 0.78, 0.72), roughness=0.8), size=30)
    cube = add(
        bpy.ops.mesh.primitive_cube_add,
        "Cube",
        material("Orange", (0.9, 0.35, 0.05)),
        size=1.6,
        location=(-2.4, 0, 0.8),
    )
    ball = add(
        bpy.ops.mesh.primitive_uv_sphere_add,
        "Ball",
        material("Blue", (0.1, 0.3, 0.9), roughness=0.2),
        radius=0.8,
        location=(0, 0, 0.8),
    )
    ring = add(
        bpy.ops.mesh.primitive_torus_add,
        "Ring",
        material("Gold", (1.0, 0.75, 0.3), metallic=1.0),
        location=(2.4, 0, 0.9),
        rotation=(math.radians(70), 0, 0),
    )
    ball.data.shade_smooth()
    ring.data.shade_smooth()

    for frame in (1, frames):
        t = (frame - 1) / max(1, frames - 1)
        cube.rotation_euler = (0, 0, t * math.pi)
        cube.keyframe_insert("rotation_euler", frame=frame)
        ring.rotation_euler = (math.radians(70), 0, t * 2 * math.pi)
        ring.keyframe_insert("rotation_euler", frame=frame)
    for frame in range(1, frames + 1, max(1, frames // 4)):
        phase = (frame - 1) / max(1, frames - 1) * 4 * math.pi
        ball.location = (0, 0, 0.8 + 1.2 * abs(math.sin(phase)))
        ball.keyframe_insert("location", frame=frame)

    bpy.ops.object.camera_add(location=(0, -9, 3.6), rotation=(math.radians(72), 0, 0))
    scene.camera = bpy.context.active_object
    bpy.ops.object.light_add(type="SUN", rotation=(math.radians(40), math.radians(20), math.radians(30)))
    bpy.context.active_object.data.energy = 3.0


def main(argv):
    out = argv[0]
    defaults = [48, 320, 180, 16]
    given = [int(a) for a in argv[1:5]]
    frames, width, height, samples = given + defaults[len(given) :]
    build(frames, width, height, samples)
    bpy.ops.wm.save_as_mainfile(filepath=out, compress=True)
    emit(event="saved", path=out, frames=frames)
    return 0


if __name__ == "__main__":
    run(lambda: main(sys.argv[sys.argv.index("--") + 1 :]))
