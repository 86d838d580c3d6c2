"""Runs inside Blender: open the job's .blend with its scripts disabled, apply the job's settings, render each frame
and report it on stdout as soon as it is written, so the worker can store it while the next one renders.

Two modes. One-shot: the spec is the argument, Blender exits after the chunk. Warm (`--serve JOB_ID`): specs
arrive one JSON line at a time on stdin and the file stays loaded between them, so consecutive chunks of one job
skip Blender's start-up and the file load; each chunk ends with a `done` (or `error`) event.

The worker chose the device (farm/devices.py); this script only applies it. Standalone on purpose (stdlib + bpy
only): the same file runs under the `bpy` module or a `blender` binary.
Usage: <blender> script.py -- '<json spec>'   or   <blender> script.py -- --serve JOB_ID
"""

import json
import os
import sys
import time

import bpy

MARK = "@@FARM@@"
FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "OPEN_EXR": "OPEN_EXR"}


def emit(**event):
    print(MARK, json.dumps(event), flush=True)


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


def open_blend(path):
    bpy.context.preferences.filepaths.use_scripts_auto_execute = False
    try:
        bpy.ops.wm.open_mainfile(filepath=path, load_ui=False, use_scripts=False)
    except RuntimeError as exc:
        raise ChunkError(str(exc).strip()) from None


def render_chunk(spec, loaded):
    """Render the spec's frames; returns the file now loaded. Opens the file only if it is not loaded already."""
    warm = loaded == spec["blend"]
    if not warm:
        open_blend(spec["blend"])
        loaded = spec["blend"]
    scene = bpy.context.scene
    try:
        apply_spec(scene, spec)
    except (TypeError, ValueError) as exc:
        raise ChunkError(str(exc)) from None
    label = spec["device"]["label"]
    emit(event="ready", device=label, blender=bpy.app.version_string, warm=warm, pid=os.getpid())
    os.makedirs(spec["out"], exist_ok=True)
    for frame in spec["frames"]:
        scene.frame_set(frame)
        base = os.path.join(spec["out"], f"{frame:07d}")
        scene.render.filepath = base
        started = time.perf_counter()
        bpy.ops.render.render(write_still=True)
        elapsed_ms = (time.perf_counter() - started) * 1000
        path = base + scene.render.file_extension
        if not os.path.isfile(path):
            raise ChunkError(f"Blender rendered frame {frame} but wrote no image at {path}")
        emit(event="frame", frame=frame, path=path, ms=round(elapsed_ms, 1), device=label)
    emit(event="done")
    return loaded


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
    if argv[0] == "--serve":
        return serve()
    try:
        render_chunk(json.loads(argv[0]), None)
    except ChunkError as exc:
        emit(event="error", message=str(exc))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[sys.argv.index("--") + 1 :]))
