"""Runs inside Blender: open the job's .blend with its scripts disabled, apply the job's settings, render each frame
and report it on stdout as soon as it is written, so the worker can store it while the next one renders.

Standalone on purpose (stdlib + bpy only): the same file runs under the `bpy` module or a `blender` binary.
Usage: <blender> script.py -- '<json spec>'
"""

import json
import os
import sys
import time

import bpy

MARK = "@@FARM@@"
GPU_BACKENDS = ("OPTIX", "CUDA", "HIP", "ONEAPI", "METAL")
FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "OPEN_EXR": "OPEN_EXR"}


def emit(**event):
    print(MARK, json.dumps(event), flush=True)


class NoDevice(Exception):
    pass


def cycles_gpus():
    """(backend, [device names]) for the best GPU backend that has devices, or (None, [])."""
    prefs = bpy.context.preferences.addons["cycles"].preferences
    for backend in GPU_BACKENDS:
        try:
            devices = prefs.get_devices_for_type(backend)
        except (TypeError, ValueError, RuntimeError):
            continue
        gpus = [d for d in devices if d.type == backend]
        if gpus:
            return backend, gpus
    return None, []


def choose_device(scene, want):
    """Set Cycles to the best backend for AUTO, require a GPU for GPU, force CPU for CPU; describe the choice."""
    if scene.render.engine != "CYCLES":
        if want == "CPU":
            raise NoDevice(f"device CPU needs the Cycles engine; {scene.render.engine} renders with OpenGL")
        return "OpenGL"
    if want != "CPU":
        backend, gpus = cycles_gpus()
        if backend:
            prefs = bpy.context.preferences.addons["cycles"].preferences
            prefs.compute_device_type = backend
            for device in prefs.devices:
                device.use = device.type == backend
            scene.cycles.device = "GPU"
            return f"{backend}: " + ", ".join(d.name for d in gpus)
        if want == "GPU":
            raise NoDevice("device GPU was asked for, but Cycles found no OPTIX, CUDA, HIP, ONEAPI or METAL device")
    scene.cycles.device = "CPU"
    return "CPU"


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


def main(spec):
    bpy.context.preferences.filepaths.use_scripts_auto_execute = False
    try:
        bpy.ops.wm.open_mainfile(filepath=spec["blend"], load_ui=False, use_scripts=False)
    except RuntimeError as exc:
        emit(event="error", message=str(exc).strip())
        return 2
    scene = bpy.context.scene
    try:
        apply_spec(scene, spec)
        device = choose_device(scene, spec.get("device") or "AUTO")
    except (NoDevice, TypeError, ValueError) as exc:
        emit(event="error", message=str(exc))
        return 2
    emit(event="ready", device=device, blender=bpy.app.version_string)
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
            emit(event="error", message=f"Blender rendered frame {frame} but wrote no image at {path}")
            return 2
        emit(event="frame", frame=frame, path=path, ms=round(elapsed_ms, 1), device=device)
    emit(event="done")
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[sys.argv.index("--") + 1])))
