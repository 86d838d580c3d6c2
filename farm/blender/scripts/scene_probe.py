"""Runs inside Blender: open a .blend with its scripts disabled and print what the farm needs to plan a job —
and, when the job leaves its chunk size to the farm, time one probe frame at the job's settings (on the CPU) so
chunks can be sized from a measured pace.

Events go through the farm's private pipe (channel.py). The probe frame is written to `<out>/probe.<ext>`, where
the web host looks for it; the event names only its frame and time.

Standalone on purpose (stdlib + bpy, and the scripts beside it), so it works under a `blender` binary too.
It also lists every file the .blend reads from disk (dependencies.py), for the submission to check against the
uploaded project: paths only, nothing is opened.

Usage: <blender> scene_probe.py -- FILE ['{"render": <spec with "frame" and "out">, "trusted_scripts": bool}']
   or: <blender> scene_probe.py -- --wait, then those arguments as one JSON list on stdin (a spare started ahead)
"""

import dis
import json
import math
import os
import sys
import time

import bpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from channel import emit, run
from dependencies import trace
from render_script import ChunkError, apply_spec, go_to_frame, open_blend


def samples_of(scene):
    render = scene.render
    return scene.cycles.samples if render.engine == "CYCLES" else getattr(scene.eevee, "taa_render_samples", None)


def pixels_of(render):
    """Blender scales both sides by the percentage."""
    scale = render.resolution_percentage
    return (render.resolution_x * scale // 100) * (render.resolution_y * scale // 100)


def probe_frame(scene, spec):
    """Render one frame with the job's settings and report how long Blender took and where the image is: the
    submission keeps it as that frame of the job. Not a frame past the farm's limits (`max_samples`, `max_pixels`):
    the submission refuses that job, and the web host is no place for a huge render."""
    apply_spec(scene, dict(spec, device={"backend": "CPU", "ids": [], "label": "CPU"}))
    if (samples_of(scene) or 0) > spec.get("max_samples", math.inf) or pixels_of(scene.render) > spec.get(
        "max_pixels", math.inf
    ):
        return
    frame = spec["frame"] if spec.get("frame") is not None else scene.frame_start
    go_to_frame(scene, frame)
    os.chdir(spec["out"])
    scene.render.filepath = os.path.join(spec["out"], "probe")
    started = time.perf_counter()
    bpy.ops.render.render(write_still=True)
    emit(event="probe_frame", frame=frame, ms=round((time.perf_counter() - started) * 1000, 1))


# What Blender evaluates without the file's scripts: a driver expression that uses only these names (and its own
# variables) and these operations is run by Blender's restricted evaluator; any other is skipped (bpy_driver.cc).
SAFE_NAMES = {"all", "any", "len", "max", "min", "pow", "round", "sum", "bool", "float", "int", "clamp", "lerp",
              "smoothstep", "frame", "noise", "depsgraph", "self", "bpy"}  # fmt: skip
SAFE_NAMES |= {name for name in dir(math) if name[0] != "_"}
SAFE_OPS = {
    "CACHE", "POP_TOP", "PUSH_NULL", "NOP", "UNARY_POSITIVE", "UNARY_NEGATIVE", "UNARY_NOT", "UNARY_INVERT",
    "BINARY_SUBSCR", "GET_LEN", "LIST_TO_TUPLE", "RETURN_VALUE", "SWAP", "BUILD_TUPLE", "BUILD_LIST", "BUILD_SET",
    "BUILD_MAP", "COMPARE_OP", "JUMP_FORWARD", "JUMP_IF_FALSE_OR_POP", "JUMP_IF_TRUE_OR_POP", "LOAD_GLOBAL", "IS_OP",
    "CONTAINS_OP", "BINARY_OP", "LOAD_FAST", "STORE_FAST", "DELETE_FAST", "BUILD_SLICE", "LOAD_DEREF",
    "STORE_DEREF", "RESUME", "LIST_EXTEND", "SET_UPDATE", "LOAD_CONST", "LOAD_NAME", "CALL", "KW_NAMES", "PRECALL",
}  # fmt: skip


def skipped_without_scripts(driver):
    """Whether Blender skips this driver with scripts off: a Python expression outside the restricted subset.
    One that does not even compile fails in the artist's Blender too, so it is not the farm's difference."""
    if driver.type != "SCRIPTED" or driver.is_simple_expression:
        return False
    try:
        code = compile(driver.expression, "<driver>", "eval")
    except (SyntaxError, ValueError):
        return False
    allowed = SAFE_NAMES | {v.name for v in driver.variables}
    if any(name[0] == "_" or name not in allowed for name in code.co_names):
        return True
    operations = {ins.opname for ins in dis.get_instructions(code)}
    return any(op not in SAFE_OPS and not op.startswith("POP_JUMP") for op in operations)


def scripts(trusted):
    """What in the file is Python (or OSL) that does not run with scripts off: driver expressions outside Blender's
    restricted subset, text blocks registered to run at load, and script nodes. Up to five names of each."""
    drivers, texts, nodes = [], [], []
    for collection in (bpy.data.objects, bpy.data.meshes, bpy.data.materials, bpy.data.node_groups, bpy.data.scenes,
                       bpy.data.shape_keys, bpy.data.worlds, bpy.data.lights, bpy.data.cameras, bpy.data.armatures,
                       bpy.data.curves):  # fmt: skip
        for block in collection:
            anim = getattr(block, "animation_data", None)
            for curve in anim.drivers if anim else ():
                if skipped_without_scripts(curve.driver):
                    drivers.append(f"{block.name}: {curve.data_path}[{curve.array_index}]")
    texts = [text.name for text in bpy.data.texts if text.use_module]
    trees = [(m.name, m.node_tree) for m in bpy.data.materials if m.node_tree]
    trees += [(g.name, g) for g in bpy.data.node_groups]
    nodes = [f"{name}: {node.name}" for name, t in trees for node in t.nodes if node.bl_idname == "ShaderNodeScript"]
    return {
        "trusted": trusted,
        "python_drivers": len(drivers),
        "text_blocks": len(texts),
        "script_nodes": len(nodes),
        "examples": {"python_drivers": drivers[:5], "text_blocks": texts[:5], "script_nodes": nodes[:5]},
    }


def main(path, spec=None, trusted=False):
    try:
        uncached = open_blend(path, trusted)
    except ChunkError as exc:
        emit(event="error", message=str(exc))
        return 2
    scene = bpy.context.scene
    render = scene.render
    samples = samples_of(scene)
    emit(
        event="scene",
        scene=scene.name,
        scenes=[s.name for s in bpy.data.scenes],
        frame_start=scene.frame_start,
        frame_end=scene.frame_end,
        fps=scene.render.fps / scene.render.fps_base,
        engine=render.engine,
        samples=samples,
        resolution_x=render.resolution_x,
        resolution_y=render.resolution_y,
        resolution_percentage=render.resolution_percentage,
        output_format=render.image_settings.file_format,
        camera=scene.camera.name if scene.camera else None,
        blender=bpy.app.version_string,
        scripts=scripts(trusted),
        unbaked_fluids=uncached,  # domains without a cache folder beside the file
    )
    for entry in trace():  # one event each: a studio file may name thousands
        emit(event="dependency", **entry)
    if spec and scene.camera:  # no camera: the farm refuses the file, nothing to time
        probe_frame(scene, spec)
    return 0


def start():
    args = sys.argv[sys.argv.index("--") + 1 :]
    if args == ["--wait"]:
        line = sys.stdin.readline()
        if not line:  # whoever started the spare went away without using it
            return 0
        args = json.loads(line)
    options = json.loads(args[1]) if len(args) > 1 else {}
    return main(args[0], options.get("render"), options.get("trusted_scripts", False))


if __name__ == "__main__":
    run(start)
