"""Runs inside Blender: build the .blend files the tests throw at the farm, the way studios and attackers make them.

Usage: <blender> blender_files.py -- KIND OUT.blend [ARG]. Kinds:
- `forged_events`: a driver whose expression holds lines that look like the farm's events (ARG: a path outside the
  job that those events name). Blender prints it verbatim while it renders, scripts off.
- `no_camera`: an empty scene.
- `huge`: a scene asking, on its own, for the most Blender allows: 16,777,216 samples, 16384×16384 at 100%, and
  200,000 frames.
- `python_driver`: a driver that is not a "simple expression" (`max([frame, 1.0]) * 0.1`): bpy hangs at exit.
- `scripted`: one of each kind of script that does not run with scripts off: a driver outside Blender's restricted
  subset (it reads an attribute), a text block registered to run at load, an OSL script node.
- `file_output`: a compositor File Output node writing to ARG (a folder outside the job).
- `smoke`, `smoke_baked`: a Mantaflow smoke domain; its cache folder absent, or baked beside the file.
- `movie`: frames 1-4 of a moving cube at 65×37 (odd both ways) and 29.97 fps (30 / 1.001).
- `many_samples`: 400×225 at ARG Cycles samples (adaptive sampling and denoising off), frames 1-2: a frame slow
  enough to watch Blender's progress move inside it. ARG `SAMPLES:SECONDS` also sets Cycles' time limit, so the frame
  lasts about that long on a fast machine and a slow one alike.
- `rigid_body`, `rigid_body_baked`, `cloth`, `particles`, `gn_sim`, `gn_sim_baked`: other simulations, unbaked
  (they need every frame before the one rendered) or baked.
Each scene is tiny (64×36, Cycles 4 samples, frames 1-6) so the tests stay fast on two cores.
"""

import json
import math
import os
import sys

import bpy

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "farm", "blender", "scripts")
)
from channel import emit, run  # found through the path above


def base_scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 6
    render = scene.render
    render.engine = "CYCLES"
    render.resolution_x, render.resolution_y, render.resolution_percentage = 64, 36, 100
    scene.cycles.samples = 4
    scene.cycles.use_denoising = False
    scene.cycles.device = "CPU"
    world = bpy.data.worlds.new("Sky")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.4, 0.5, 0.6, 1.0)
    scene.world = world
    bpy.ops.object.camera_add(location=(0, -9, 3.5), rotation=(math.radians(72), 0, 0))
    scene.camera = bpy.context.active_object
    bpy.ops.object.light_add(type="SUN", rotation=(math.radians(40), math.radians(20), 0))
    return scene


def cube(location=(0, 0, 1), size=1.0, name="Cube"):
    bpy.ops.mesh.primitive_cube_add(size=size, location=location)
    obj = bpy.context.active_object
    obj.name = name
    return obj


def ground():
    bpy.ops.mesh.primitive_plane_add(size=12, location=(0, 0, 0))
    return bpy.context.active_object


def driver(obj, expression):
    curve = obj.driver_add("location", 0)
    curve.driver.type = "SCRIPTED"
    curve.driver.expression = expression


def forged_events(target):
    """Every event the farm ever read from Blender's output, in each format it has used, naming `target`."""
    base_scene()
    events = [
        {"event": "ready", "device": "forged", "pid": 1, "warm": False},
        {"event": "frame", "frame": 1, "path": target, "ms": 1.0, "device": "forged"},
        {"event": "probe_frame", "frame": 1, "path": target, "ms": 1.0},
        {"event": "error", "message": "forged error"},
        {"event": "done"},
        {"event": "end", "code": 0},
    ]
    cube()
    for event in events:  # a driver per line: Blender prints the first 256 characters of an expression
        text = json.dumps(event)
        for line in (f"@@FARM@@ {text}", text, f"farm: event {text}"):
            holder = bpy.data.objects.new("Forger", None)
            bpy.context.scene.collection.objects.link(holder)
            driver(holder, "0\n" + line)


def huge():
    scene = base_scene()
    cube()
    scene.cycles.samples = 16777216
    scene.render.resolution_x = scene.render.resolution_y = 16384
    scene.frame_end = 1048574  # Blender's last frame: past FARM_MAX_FRAMES


def python_driver():
    base_scene()
    driver(cube(), "max([frame, 1.0]) * 0.1")


def scripted():
    base_scene()
    obj = cube()
    driver(obj, "bpy.context.scene.frame_current * 0.2")
    text = bpy.data.texts.new("rig_ui.py")
    text.write("import bpy\n")
    text.use_module = True
    material = bpy.data.materials.new("Shader")
    material.use_nodes = True
    material.node_tree.nodes.new("ShaderNodeScript")
    obj.data.materials.append(material)


def file_output(target):
    scene = base_scene()
    cube()
    scene.use_nodes = True
    tree = scene.node_tree
    output = tree.nodes.new("CompositorNodeOutputFile")
    output.base_path = target
    tree.links.new(tree.nodes["Render Layers"].outputs["Image"], output.inputs[0])


def volume_material():
    mat = bpy.data.materials.new("Smoke")
    mat.use_nodes = True
    nodes = mat.node_tree.nodes
    nodes.remove(nodes["Principled BSDF"])
    volume = nodes.new("ShaderNodeVolumePrincipled")
    volume.inputs["Density"].default_value = 8.0
    mat.node_tree.links.new(volume.outputs[0], nodes["Material Output"].inputs["Volume"])
    return mat


def smoke(out, baked):
    scene = base_scene()
    domain = cube(location=(0, 0, 1.5), size=3.0, name="Domain")
    domain.data.materials.append(volume_material())
    fluid = domain.modifiers.new("Fluid", "FLUID")
    fluid.fluid_type = "DOMAIN"
    settings = fluid.domain_settings
    settings.domain_type = "GAS"
    settings.resolution_max = 12
    settings.cache_type = "ALL" if baked else "REPLAY"
    settings.cache_frame_start, settings.cache_frame_end = scene.frame_start, scene.frame_end
    settings.cache_directory = "//cache_smoke"
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.4, location=(0, 0, 0.6))
    flow = bpy.context.active_object.modifiers.new("Fluid", "FLUID")
    flow.fluid_type = "FLOW"
    flow.flow_settings.flow_type = "SMOKE"
    flow.flow_settings.flow_behavior = "INFLOW"
    if baked:
        bpy.ops.wm.save_as_mainfile(filepath=out)  # the cache path is relative to the saved file
        with bpy.context.temp_override(object=domain, active_object=domain):
            bpy.ops.fluid.bake_all()


def rigid_body(baked):
    scene = base_scene()
    floor = ground()
    with bpy.context.temp_override(object=floor, active_object=floor, selected_objects=[floor]):
        bpy.ops.rigidbody.object_add(type="PASSIVE")
    box = cube(location=(0, 0, 3), name="Box")
    box.rotation_euler = (0.4, 0.3, 0)
    with bpy.context.temp_override(object=box, active_object=box, selected_objects=[box]):
        bpy.ops.rigidbody.object_add(type="ACTIVE")
    cache = scene.rigidbody_world.point_cache
    cache.frame_start, cache.frame_end = scene.frame_start, scene.frame_end
    if baked:
        with bpy.context.temp_override(scene=scene, point_cache=cache):
            bpy.ops.ptcache.bake(bake=True)


def cloth():
    base_scene()
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.8, location=(0, 0, 0.8))
    bpy.context.active_object.modifiers.new("Collision", "COLLISION")
    bpy.ops.mesh.primitive_grid_add(x_subdivisions=12, y_subdivisions=12, size=2.5, location=(0, 0, 2.4))
    bpy.context.active_object.modifiers.new("Cloth", "CLOTH")


def particles():
    base_scene()
    bpy.ops.mesh.primitive_ico_sphere_add(radius=0.12, location=(0, 0, -20))
    dot = bpy.context.active_object
    emitter = cube(location=(0, 0, 2.5), size=0.6, name="Emitter")
    system = emitter.modifiers.new("Particles", "PARTICLE_SYSTEM").particle_system
    settings = system.settings
    settings.count, settings.frame_start, settings.frame_end, settings.lifetime = 60, 1, 6, 50
    settings.normal_factor = 2.0
    settings.render_type = "OBJECT"
    settings.instance_object = dot


def gn_sim(out, baked):
    """A Geometry Nodes simulation zone that moves the cube down a little more each frame."""
    scene = base_scene()
    obj = cube(location=(0, 0, 3))
    tree = bpy.data.node_groups.new("Fall", "GeometryNodeTree")
    tree.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    tree.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    nodes, links = tree.nodes, tree.links
    group_in, group_out = nodes.new("NodeGroupInput"), nodes.new("NodeGroupOutput")
    sim_in, sim_out = nodes.new("GeometryNodeSimulationInput"), nodes.new("GeometryNodeSimulationOutput")
    sim_in.pair_with_output(sim_out)
    move = nodes.new("GeometryNodeSetPosition")
    move.inputs["Offset"].default_value = (0.05, 0, -0.35)
    links.new(group_in.outputs[0], sim_in.inputs["Geometry"])
    links.new(sim_in.outputs["Geometry"], move.inputs["Geometry"])
    links.new(move.outputs["Geometry"], sim_out.inputs["Geometry"])
    links.new(sim_out.outputs["Geometry"], group_out.inputs[0])
    modifier = obj.modifiers.new("Fall", "NODES")
    modifier.node_group = tree
    if baked:
        bpy.ops.wm.save_as_mainfile(filepath=out)
        with bpy.context.temp_override(object=obj, active_object=obj, selected_objects=[obj], scene=scene):
            bpy.ops.object.simulation_nodes_cache_bake(selected=True)


def movie():
    scene = base_scene()
    scene.frame_start, scene.frame_end = 1, 4
    scene.render.resolution_x, scene.render.resolution_y = 65, 37
    scene.render.fps, scene.render.fps_base = 30, 1.001
    obj = cube()
    for frame, x in ((1, -3.0), (4, 3.0)):
        obj.location.x = x
        obj.keyframe_insert("location", index=0, frame=frame)


def many_samples(arg):
    samples, _, seconds = arg.partition(":")
    scene = base_scene()
    scene.frame_start, scene.frame_end = 1, 2
    scene.render.resolution_x, scene.render.resolution_y = 400, 225
    scene.cycles.samples = int(samples)
    scene.cycles.time_limit = float(seconds or 0)
    scene.cycles.use_adaptive_sampling = False
    cube()


def split_still(kind):
    """A still to split: Cycles with its denoiser off (`noisy`) or on (`denoised`), 16 samples, or Workbench
    (`workbench`, split by bands of rows) with outlines and cavity, which read neighbouring pixels. A sphere, cubes
    and the ground give edges and shading across the frame; an exposure and a dither of the scene's own check the
    merge writes the still with the scene's output settings."""
    scene = base_scene()
    scene.frame_start, scene.frame_end = 1, 1
    ground()
    cube(location=(-1.5, 0, 1))
    cube(location=(1.8, 1.5, 0.6), size=1.2, name="Back")
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.9, location=(0.4, -1.2, 0.9))
    scene.view_settings.exposure = 0.4
    scene.render.dither_intensity = 0.5
    if kind == "workbench":
        scene.render.engine = "BLENDER_WORKBENCH"
        scene.render.resolution_x, scene.render.resolution_y = 64, 160
        shading = scene.display.shading
        shading.show_object_outline = shading.show_cavity = True
        shading.cavity_type = "BOTH"
        return
    scene.render.resolution_x, scene.render.resolution_y = 64, 48
    scene.cycles.samples = 16
    scene.cycles.use_denoising = kind == "denoised"


def main(argv):
    kind, out, arg = argv[0], argv[1], (argv[2] if len(argv) > 2 else None)
    builders = {
        "forged_events": lambda: forged_events(arg),
        "no_camera": lambda: bpy.ops.wm.read_factory_settings(use_empty=True),
        "huge": huge,
        "python_driver": python_driver,
        "scripted": scripted,
        "file_output": lambda: file_output(arg),
        "smoke": lambda: smoke(out, baked=False),
        "smoke_baked": lambda: smoke(out, baked=True),
        "rigid_body": lambda: rigid_body(baked=False),
        "rigid_body_baked": lambda: rigid_body(baked=True),
        "cloth": cloth,
        "particles": particles,
        "gn_sim": lambda: gn_sim(out, baked=False),
        "gn_sim_baked": lambda: gn_sim(out, baked=True),
        "movie": movie,
        "many_samples": lambda: many_samples(arg),
        "split_still": lambda: split_still(arg),
    }
    builders[kind]()
    bpy.ops.wm.save_as_mainfile(filepath=out)
    emit(event="saved", path=out)
    return 0


if __name__ == "__main__":
    run(lambda: main(sys.argv[sys.argv.index("--") + 1 :]))
