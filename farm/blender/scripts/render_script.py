"""Runs inside Blender: open the job's .blend with its scripts disabled, apply the job's settings, render each frame
and report it as soon as it is written, so the worker can store it while the next one renders.

Two modes. One-shot: the spec is the argument, Blender exits after the chunk. Warm (`--serve JOB_ID`): specs
arrive one JSON line at a time on stdin and the file stays loaded between them, so consecutive chunks of one job
skip Blender's start-up and the file load; each chunk ends with a `done` (or `error`) event.

Events go through the farm's private pipe (channel.py), never stdout. A frame event names the frame only: the
worker knows where the image must be (`<out>/<frame:07d>.<ext>`) and looks nowhere else. The file is confined
before it renders: compositor File Output nodes are muted and unbaked disk caches kept in memory or in this
process's own folder (HOME, which the farm makes for each Blender), so it writes nothing outside the farm's folders.

The worker chose the device (farm/blender/devices.py); this script only applies it. Standalone on purpose (stdlib + bpy
only): the same file runs under the `bpy` module or a `blender` binary.
Usage: <blender> script.py -- '<json spec>'   or   <blender> script.py -- --serve JOB_ID
"""

import ctypes
import json
import os
import sys
import time

import bpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from channel import emit, run

FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "OPEN_EXR": "OPEN_EXR"}


class ChunkError(Exception):
    pass


def apply_device(scene, choice):
    """Enable exactly the devices the worker chose (one GPU when it is pinned), or the CPU."""
    backend = choice["backend"]
    if backend == "OpenGL":
        return
    if backend == "CPU":
        scene.cycles.device = "CPU"
        return
    prefs = bpy.context.preferences.addons["cycles"].preferences
    prefs.compute_device_type = backend
    prefs.get_devices_for_type(backend)  # fills prefs.devices
    wanted = set(choice["ids"])
    found = 0
    for device in prefs.devices:
        device.use = device.id in wanted
        found += device.use
    if not found:
        raise ChunkError(f"the {backend} device this worker was given is gone: {choice['label']}")
    scene.cycles.device = "GPU"


def apply_spec(scene, spec):
    render = scene.render
    if spec.get("engine") and render.engine != spec["engine"]:
        render.engine = spec["engine"]
    if spec.get("samples"):
        if render.engine == "CYCLES":
            scene.cycles.samples = spec["samples"]
        elif render.engine.startswith("BLENDER_EEVEE"):
            scene.eevee.taa_render_samples = spec["samples"]
    for key in ("resolution_x", "resolution_y", "resolution_percentage"):
        if spec.get(key):
            setattr(render, key, spec[key])
    render.image_settings.file_format = FORMATS[spec.get("output_format") or "PNG"]
    render.use_file_extension = True
    render.use_overwrite = True
    render.use_placeholder = False
    apply_device(scene, spec["device"])


def recipe_of(scene):
    """The scene's own output settings, read before a part changes them: the merge writes the still with them."""
    render, view = scene.render, scene.view_settings
    image, cycles = render.image_settings, scene.cycles
    denoise = render.engine == "CYCLES" and cycles.use_denoising
    return {
        "view_transform": view.view_transform,
        "look": view.look,
        "exposure": view.exposure,
        "gamma": view.gamma,
        "display_device": scene.display_settings.display_device,
        "dither": render.dither_intensity,
        "color_mode": image.color_mode,
        "color_depth": image.color_depth,
        "compression": image.compression,
        "quality": image.quality,
        "exr_codec": image.exr_codec,
        "denoise": bool(denoise),
        "denoise_prefilter": cycles.denoising_prefilter,
        "denoise_quality": cycles.denoising_quality,
        "denoise_passes": cycles.denoising_input_passes,
    }


def apply_part(scene, part):
    """Render one part of a split still (farm/jobs/splitting.py) into a 32-bit OpenEXR of the render itself, not
    composited, nor denoised: the merge does that once, on the whole. Samples: this part's run of the frame's
    samples, into a multilayer EXR that also holds the denoising passes when the scene denoises. Tiles: this band
    of rows, overscan included, cropped. Returns the scene's output settings as they were (`recipe_of`)."""
    recipe = recipe_of(scene)
    render = scene.render
    render.use_compositing = False
    render.use_sequencer = False
    image = render.image_settings
    if part["mode"] == "samples":
        image.file_format = "OPEN_EXR_MULTILAYER"
        cycles = scene.cycles
        cycles.use_denoising = False
        for layer in scene.view_layers:
            layer.cycles.denoising_store_passes = recipe["denoise"]
        cycles.samples = part["samples"]
        cycles.use_sample_subset = True
        cycles.sample_offset = part["sample_offset"]
        cycles.sample_subset_length = part["sample_length"]
    else:
        image.file_format = "OPEN_EXR"
        (low, high), height = part["rows"], part["height"]
        render.use_border = render.use_crop_to_border = True
        render.border_min_x, render.border_max_x = 0.0, 1.0
        # Blender truncates border × height to whole rows: half a row in lands exactly on the row meant.
        render.border_min_y = (low + 0.5) / height if low else 0.0
        render.border_max_y = (high + 0.5) / height if high < height else 1.0
    image.color_mode = "RGBA"
    image.color_depth = "32"
    image.exr_codec = "ZIP"
    return recipe


def open_blend(path, trusted=False):
    """Open the file with its scripts off (on only where the farm's admin trusts every file: FARM_TRUSTED_SCRIPTS),
    and confine what it would write. Returns the fluid domains whose cache folder holds no simulation."""
    bpy.context.preferences.filepaths.use_scripts_auto_execute = trusted
    try:
        bpy.ops.wm.open_mainfile(filepath=path, load_ui=False, use_scripts=trusted)
    except RuntimeError as exc:
        raise ChunkError(str(exc).strip()) from None
    return confine(os.path.join(os.environ.get("HOME") or os.getcwd(), "caches"))


def _holds_simulation(folder):
    """Whether a fluid cache folder holds simulated data: as the file loads, Mantaflow makes one beside it with only
    its `config` in it."""
    return any(files for root, _, files in os.walk(folder) if os.path.basename(root) != "config")


def confine(scratch):
    """Keep the file's own writes inside the farm's folders: File Output nodes (any path on the machine) are muted,
    point caches that are not baked stay in memory, and a fluid domain whose cache folder is absent or empty
    simulates into `scratch` (their names are returned). What is baked and present is only read, as plain Blender
    reads it."""
    uncached = []
    trees = [s.node_tree for s in bpy.data.scenes if s.node_tree] + list(bpy.data.node_groups)
    for tree in trees:
        for node in tree.nodes:
            if node.bl_idname == "CompositorNodeOutputFile" and not node.mute:
                node.mute = True
                print(f"farm: muted the File Output node {node.name!r}: the farm stores only the rendered frames")
    for obj in bpy.data.objects:
        for mod in obj.modifiers:
            cache = getattr(mod, "point_cache", None)
            if cache is not None and cache.use_disk_cache and not cache.is_baked:
                cache.use_disk_cache = False
            if mod.type == "FLUID" and mod.fluid_type == "DOMAIN":
                domain = mod.domain_settings
                if not _holds_simulation(bpy.path.abspath(domain.cache_directory)):
                    domain.cache_directory = os.path.join(scratch, f"fluid-{obj.name_full}")
                    uncached.append(obj.name)
        for system in obj.particle_systems:
            cache = system.point_cache
            if cache.use_disk_cache and not cache.is_baked:
                cache.use_disk_cache = False
    return uncached


def _has_simulation_zone(tree, seen):
    if tree is None or tree.name in seen:
        return False
    seen.add(tree.name)
    return any(
        node.bl_idname == "GeometryNodeSimulationOutput"
        or (node.bl_idname == "GeometryNodeGroup" and _has_simulation_zone(node.node_tree, seen))
        for node in tree.nodes
    )


def needs_pre_roll(scene):
    """Whether a frame of this scene depends on the frames before it: a simulation that is not baked (rigid bodies,
    cloth, soft bodies, particles, dynamic paint, fluids, Geometry Nodes simulation zones). Rendered alone, such a
    frame would show the simulation one step in, not where plain Blender playing the animation has it."""
    world = scene.rigidbody_world
    if world and world.enabled and world.point_cache and not world.point_cache.is_baked:
        return True
    for obj in scene.objects:
        for mod in obj.modifiers:
            cache = getattr(mod, "point_cache", None)
            if mod.show_render and cache is not None and not cache.is_baked:
                return True
            if mod.show_render and mod.type == "FLUID" and mod.fluid_type == "DOMAIN":
                return True
            if mod.show_render and mod.type == "NODES" and _has_simulation_zone(mod.node_group, set()):
                return True
        if any(not system.point_cache.is_baked for system in obj.particle_systems):
            return True
    return False


def go_to_frame(scene, frame):
    """Make `frame` current as plain Blender playing from the start would: a scene with an unbaked simulation is
    stepped through every frame before it (a warm Blender steps through frames it simulated already quickly)."""
    if frame > scene.frame_start and needs_pre_roll(scene):
        for before in range(scene.frame_start, frame):
            scene.frame_set(before)
    scene.frame_set(frame)


def render_chunk(spec, loaded):
    """Render the spec's frames; returns the file now loaded. Opens the file only if it is not loaded already, or
    for a part of a split still, which must start from the scene's own settings (an earlier part changed them)."""
    warm = loaded == spec["blend"] and not spec.get("part")
    if not warm:
        open_blend(spec["blend"], spec.get("trusted_scripts", False))
        loaded = spec["blend"]
    scene = bpy.context.scene
    try:
        apply_spec(scene, spec)
        extra = {"recipe": apply_part(scene, spec["part"])} if spec.get("part") else {}
    except (TypeError, ValueError, KeyError) as exc:
        raise ChunkError(str(exc)) from None
    label = spec["device"]["label"]
    os.chdir(os.path.dirname(spec["out"]))  # the chunk's work folder: relative paths land there
    emit(event="ready", device=label, blender=bpy.app.version_string, warm=warm, pid=os.getpid())
    for i, frame in enumerate(spec["frames"]):
        if i and frame == spec["frames"][i - 1] + 1:
            scene.frame_set(frame)
        else:
            go_to_frame(scene, frame)
        base = os.path.join(spec["out"], f"{frame:07d}")
        scene.render.filepath = base
        started = time.perf_counter()
        bpy.ops.render.render(write_still=True)
        elapsed_ms = (time.perf_counter() - started) * 1000
        path = base + scene.render.file_extension
        if not os.path.isfile(path):
            raise ChunkError(f"Blender rendered frame {frame} but wrote no image")
        emit(event="frame", frame=frame, ms=round(elapsed_ms, 1), device=label, **extra)
    emit(event="done")
    return loaded


def line_buffered_output():
    """Have C's stdout send each line as it is printed. Blender prints its render progress (`Sample 37/128`) with
    printf, which into a pipe holds lines back in 4 KiB blocks: the worker would read a frame's progress only once
    the frame is over. Where libc cannot be reached, progress is merely late."""
    try:
        libc = ctypes.CDLL(None)
        libc.setvbuf(ctypes.c_void_p.in_dll(libc, "stdout"), None, 1, 0)  # 1: _IOLBF
    except (OSError, ValueError, AttributeError):
        pass


def serve():
    """Chunk after chunk from stdin until it closes; an error ends the process (the worker starts a fresh one)."""
    loaded = None
    emit(event="serving")
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            loaded = render_chunk(json.loads(line), loaded)
        except ChunkError as exc:
            emit(event="error", message=str(exc))
            return 2
    return 0


def main(argv):
    line_buffered_output()
    if argv[0] == "--serve":
        return serve()
    try:
        render_chunk(json.loads(argv[0]), None)
    except ChunkError as exc:
        emit(event="error", message=str(exc))
        return 2
    return 0


if __name__ == "__main__":
    run(lambda: main(sys.argv[sys.argv.index("--") + 1 :]))
