"""Runs inside Blender: open a .blend with its scripts disabled and print what the farm needs to plan a job —
and, when the job leaves its chunk size to the farm, time one probe frame at the job's settings (on the CPU) so
chunks can be sized from a measured pace.

Events go through the farm's private pipe (channel.py). The probe frame is written to `<out>/probe.<ext>`, where
the web host looks for it; the event names only its frame and time.

Standalone on purpose (stdlib + bpy, and the scripts beside it), so it works under a `blender` binary too.
It also lists every file the .blend reads from disk (dependencies.py), for the submission to check against the
uploaded project: paths only, nothing is opened.

Usage: <blender> scene_probe.py -- FILE ['<json render spec with "frame" and "out">']
   or: <blender> scene_probe.py -- --wait, then those arguments as one JSON list on stdin (a spare started ahead)
"""

import json
import os
import sys
import time

import bpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from channel import emit, run
from dependencies import trace
from render_script import ChunkError, apply_spec, go_to_frame, open_blend


def probe_frame(scene, spec):
    """Render one frame with the job's settings and report how long Blender took and where the image is: the
    submission keeps it as that frame of the job."""
    apply_spec(scene, dict(spec, device={"backend": "CPU", "ids": [], "label": "CPU"}))
    frame = spec["frame"] if spec.get("frame") is not None else scene.frame_start
    go_to_frame(scene, frame)
    os.chdir(spec["out"])
    scene.render.filepath = os.path.join(spec["out"], "probe")
    started = time.perf_counter()
    bpy.ops.render.render(write_still=True)
    emit(event="probe_frame", frame=frame, ms=round((time.perf_counter() - started) * 1000, 1))


def main(path, spec=None):
    try:
        open_blend(path)  # scripts off
    except ChunkError as exc:
        emit(event="error", message=str(exc))
        return 2
    scene = bpy.context.scene
    render = scene.render
    samples = scene.cycles.samples if render.engine == "CYCLES" else getattr(scene.eevee, "taa_render_samples", None)
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
    return main(args[0], json.loads(args[1]) if len(args) > 1 else None)


if __name__ == "__main__":
    run(start)
