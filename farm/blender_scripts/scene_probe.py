"""Runs inside Blender: open a .blend with its scripts disabled and print what the farm needs to plan a job.

Standalone on purpose (stdlib + bpy only), so it works under a `blender` binary's own Python too.
"""

import json
import sys

import bpy

MARK = "@@FARM@@"


def emit(**event):
    print(MARK, json.dumps(event), flush=True)


def main(path):
    bpy.context.preferences.filepaths.use_scripts_auto_execute = False
    try:
        bpy.ops.wm.open_mainfile(filepath=path, load_ui=False, use_scripts=False)
    except RuntimeError as exc:
        emit(event="error", message=str(exc).strip())
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
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[sys.argv.index("--") + 1]))
