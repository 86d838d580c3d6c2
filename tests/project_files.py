"""Runs inside Blender: build a studio-like project, files spread over folders the way artists leave them, for the
tests of dependency tracing, packing and content-addressed uploads.

Usage: <blender> project_files.py -- ROOT OUTSIDE [FONT]. Under ROOT:
- `shots/main.blend`, the file to render (frames 1-3, 64×36, Cycles 4 samples), whose planes use
  `//maps/near.png` (a sibling folder), `//../textures/wall.png` (the parent's), UDIM tiles
  `//../textures/udim/tile.<UDIM>.png` (1001 and 1002), an image sequence `//../seq/frame_0001.png` (3 frames),
  an Alembic cache `//../cache/anim.abc` (a cube moving over the frames), a text object in `//../fonts/font.ttf`
  (FONT copied there), a texture at an absolute path in OUTSIDE (outside the project), and
  `//../textures/missing.png`, which does not exist;
- `libs/set.blend` (zstd-compressed), linked by main through `//..\\libs\\set.blend` (Windows separators), which
  links `libs/props/prop.blend` (gzip-compressed) through `//props/prop.blend`; prop's cube uses
  `//../../textures/prop.png`.
"""

import gzip
import math
import os
import shutil
import sys

import bpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blender_files import base_scene, cube
from channel import emit, run


def write_png(path, color, size=8):
    """A small flat-colour PNG (a 2×2 checker of `color` and its inverse, so a wrong mapping shows)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = bpy.data.images.new(os.path.basename(path), size, size)
    other = [1.0 - c for c in color[:3]] + [1.0]
    pixels = []
    for y in range(size):
        for x in range(size):
            pixels += [*color[:3], 1.0] if (x < size // 2) == (y < size // 2) else other
    image.pixels = pixels
    image.filepath_raw = path
    image.file_format = "PNG"
    image.save()
    bpy.data.images.remove(image)


def textured(obj, filepath, *, source="FILE", uv_scale=None):
    """Give `obj` an emission material showing the image at `filepath` (stored as given: relative stays relative)."""
    mat = bpy.data.materials.new(obj.name)
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.remove(nodes["Principled BSDF"])
    tex = nodes.new("ShaderNodeTexImage")
    image = bpy.data.images.new(obj.name, 4, 4)
    image.source = source
    image.filepath = filepath
    if source == "TILED":
        image.tiles.new(1002)
    tex.image = image
    if source == "SEQUENCE":
        tex.image_user.frame_duration = 3
        tex.image_user.frame_start = 1
        tex.image_user.use_auto_refresh = True
    if uv_scale:
        coords, mapping = nodes.new("ShaderNodeTexCoord"), nodes.new("ShaderNodeMapping")
        mapping.inputs["Scale"].default_value = uv_scale
        links.new(coords.outputs["UV"], mapping.inputs["Vector"])
        links.new(mapping.outputs["Vector"], tex.inputs["Vector"])
    emission = nodes.new("ShaderNodeEmission")
    links.new(tex.outputs["Color"], emission.inputs["Color"])
    links.new(emission.outputs[0], nodes["Material Output"].inputs["Surface"])
    obj.data.materials.append(mat)
    return obj


def plane(name, x, z):
    bpy.ops.mesh.primitive_plane_add(size=1.4, location=(x, 0, z), rotation=(math.radians(90), 0, 0))
    obj = bpy.context.active_object
    obj.name = name
    return obj


def link_collection(path, name):
    """Link collection `name` from the .blend at `path` (stored relative) and place an instance of it."""
    with bpy.data.libraries.load(path, link=True, relative=True) as (_, data_to):
        data_to.collections = [name]
    holder = bpy.data.objects.new(f"{name}-instance", None)
    holder.instance_type = "COLLECTION"
    holder.instance_collection = data_to.collections[0]
    bpy.context.scene.collection.objects.link(holder)
    return holder


def own_collection(name, objects):
    collection = bpy.data.collections.new(name)
    for obj in objects:
        for parent in list(obj.users_collection):
            parent.objects.unlink(obj)
        collection.objects.link(obj)
    return collection


def prop_file(root):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    path = os.path.join(root, "libs", "props", "prop.blend")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=path)  # saved first, so `//` means its own folder
    box = textured(cube(location=(2.2, 0, 2.2), size=0.9, name="Prop"), "//../../textures/prop.png")
    own_collection("PropCol", [box])
    bpy.data.collections["PropCol"].use_fake_user = True
    bpy.ops.wm.save_as_mainfile(filepath=path)
    with open(path, "rb") as fh:
        data = fh.read()
    with gzip.open(path, "wb") as fh:  # Blender before 3.0 compressed with gzip, and still reads it
        fh.write(data)


def set_file(root):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    path = os.path.join(root, "libs", "set.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    instance = link_collection(os.path.join(root, "libs", "props", "prop.blend"), "PropCol")
    floor = cube(location=(-2.2, 0, 2.2), size=0.9, name="SetCube")
    collection = own_collection("SetCol", [instance, floor])
    collection.use_fake_user = True
    bpy.ops.wm.save_as_mainfile(filepath=path, compress=True)  # zstd, as Blender ≥ 3.0 compresses


def alembic(root):
    """A cube moving across frames 1-3, exported to Alembic, for main to read through a cache modifier."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 3
    moving = cube(location=(0, 0, -1.2), size=0.6, name="Moving")
    for frame, x in ((1, -1.5), (3, 1.5)):
        moving.location.x = x
        moving.keyframe_insert("location", frame=frame)
    path = os.path.join(root, "cache", "anim.abc")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    bpy.ops.wm.alembic_export(filepath=path, start=1, end=3)


def main_file(root, outside, font):
    main = os.path.join(root, "shots", "main.blend")
    os.makedirs(os.path.dirname(main), exist_ok=True)
    scene = base_scene()
    scene.frame_start, scene.frame_end = 1, 3
    bpy.context.scene.camera.location = (0, -11, 1.0)
    bpy.context.scene.camera.rotation_euler = (math.radians(90), 0, 0)
    bpy.ops.wm.save_as_mainfile(filepath=main)
    textured(plane("Near", -3.2, 0.4), "//maps/near.png")
    textured(plane("Wall", -1.6, 0.4), "//../textures/wall.png")
    textured(plane("Udim", 0.0, 0.4), "//../textures/udim/tile.<UDIM>.png", source="TILED", uv_scale=(2, 1, 1))
    textured(plane("Seq", 1.6, 0.4), "//../seq/frame_0001.png", source="SEQUENCE")
    textured(plane("Outside", 3.2, 0.4), os.path.join(outside, "outside.png"))
    textured(plane("Missing", 3.2, -1.2), "//../textures/missing.png")
    shutil.copyfile(font, os.path.join(root, "fonts", "font.ttf"))
    bpy.ops.object.text_add(location=(-3.5, 0, -1.6), rotation=(math.radians(90), 0, 0))
    text = bpy.context.active_object
    text.data.body = "farm"
    text.data.font = bpy.data.fonts.load("//../fonts/font.ttf")
    bpy.ops.wm.alembic_import(filepath=os.path.join(root, "cache", "anim.abc"), as_background_job=False)
    for cache in bpy.data.cache_files:
        cache.filepath = "//../cache/anim.abc"
    link_collection(os.path.join(root, "libs", "set.blend"), "SetCol")
    for lib in bpy.data.libraries:
        if lib.parent is None:
            lib.filepath = "//..\\libs\\set.blend"  # as a Windows artist's file stores it
    bpy.ops.wm.save_as_mainfile(filepath=main)


def images(root, outside):
    write_png(os.path.join(root, "shots", "maps", "near.png"), (0.9, 0.2, 0.1, 1))
    write_png(os.path.join(root, "textures", "wall.png"), (0.1, 0.8, 0.2, 1))
    write_png(os.path.join(root, "textures", "prop.png"), (0.9, 0.9, 0.1, 1))
    write_png(os.path.join(root, "textures", "udim", "tile.1001.png"), (0.2, 0.3, 0.9, 1))
    write_png(os.path.join(root, "textures", "udim", "tile.1002.png"), (0.9, 0.5, 0.7, 1))
    for frame, color in ((1, (1, 0, 0, 1)), (2, (0, 1, 0, 1)), (3, (0, 0, 1, 1))):
        write_png(os.path.join(root, "seq", f"frame_{frame:04d}.png"), color)
    write_png(os.path.join(outside, "outside.png"), (0.6, 0.1, 0.9, 1))
    os.makedirs(os.path.join(root, "fonts"), exist_ok=True)


def main(root, outside, font):
    images(root, outside)
    prop_file(root)
    set_file(root)
    alembic(root)
    main_file(root, outside, font)
    emit(event="saved", path=os.path.join(root, "shots", "main.blend"))
    return 0


if __name__ == "__main__":
    args = sys.argv[sys.argv.index("--") + 1 :]
    run(lambda: main(args[0], args[1], args[2]))
