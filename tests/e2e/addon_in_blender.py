"""Runs inside Blender: install the farm's add-on from its zip, as an extension or as a legacy add-on, set its
preferences, open a .blend, change it without saving (frame range, resolution, chunk size, a world texture named
relatively), submit it with the add-on's operator and follow the job to its end, as the panel would.

Usage: <blender> addon_in_blender.py -- CONFIG_JSON with "zip", "mode" ("extension" or "legacy"), "url", "token",
"blend", "texture" (a file beside the .blend) and "frames" ([start, end]). Events: `installed`, `submitted`,
`status` (each change the panel would show), `followed`, `disabled` (what is left once it is disabled).
"""

import json
import os
import sys
import time

import bpy

sys.path.insert(
    0,
    os.path.join(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "farm", "blender", "scripts"
    ),
)
from channel import emit, run  # found through the path above

FOLLOW_SECONDS = 240


def install(config):
    if config["mode"] == "extension":
        bpy.ops.extensions.package_install_files(filepath=config["zip"], repo="user_default", enable_on_install=True)
        return "bl_ext.user_default.farm_submit"
    bpy.ops.preferences.addon_install(filepath=config["zip"])
    bpy.ops.preferences.addon_enable(module="farm_submit")
    return "farm_submit"


def change_without_saving(scene, config):
    scene.frame_start, scene.frame_end = config["frames"]
    scene.render.resolution_x, scene.render.resolution_y = 48, 32
    scene.farm_chunk_size = 1
    nodes, links = scene.world.node_tree.nodes, scene.world.node_tree.links
    sky = nodes.new("ShaderNodeTexEnvironment")
    sky.image = bpy.data.images.load(config["texture"])
    sky.image.filepath = bpy.path.relpath(config["texture"])  # `//tex/…`: the add-on must send that file
    links.new(sky.outputs["Color"], nodes["Background"].inputs["Color"])
    nodes["Background"].inputs["Strength"].default_value = 1.0


def main():
    config = json.loads(sys.argv[sys.argv.index("--") + 1])
    module = install(config)
    addon = sys.modules[module]
    prefs = bpy.context.preferences.addons[module].preferences
    prefs.url, prefs.token = config["url"], config["token"]
    emit(
        event="installed",
        module=module,
        addon=addon.__file__,
        sending=sys.modules["farm.projects.sending"].__file__,
        packing=sys.modules["farm.projects.packing"].__file__,
        bat=sys.modules["blender_asset_tracer"].__file__,
        boto3="boto3" in sys.modules,
    )

    bpy.ops.wm.open_mainfile(filepath=config["blend"], load_ui=False)
    scene = bpy.context.scene
    change_without_saving(scene, config)
    result = bpy.ops.farm.submit()
    wm = bpy.context.window_manager
    emit(
        event="submitted",
        result=sorted(result),
        job_id=scene.farm_job_id,
        uploaded=wm.farm_uploaded,
        warnings=wm.farm_warnings,
        error=wm.farm_error,
        open_file=bpy.data.filepath,
    )
    if not scene.farm_job_id:
        return 1

    shown, deadline = None, time.monotonic() + FOLLOW_SECONDS
    while time.monotonic() < deadline:
        bpy.ops.farm.refresh()
        now = (wm.farm_status, round(wm.farm_progress, 3), wm.farm_error)
        if now != shown:
            shown = now
            emit(event="status", text=now[0], progress=now[1], error=now[2])
        if wm.farm_error or wm.farm_status.startswith(("Completed", "Failed", "Canceled")):
            break
        time.sleep(0.3)
    emit(
        event="followed",
        text=wm.farm_status,
        progress=wm.farm_progress,
        error=wm.farm_error,
        job_id=scene.farm_job_id,
        page=addon.job_page(prefs.url, scene.farm_job_id),
    )
    bpy.ops.preferences.addon_disable(module=module)
    emit(
        event="disabled",
        enabled=module in bpy.context.preferences.addons,
        properties=[n for n in ("farm_job_id", "farm_chunk_size") if hasattr(bpy.types.Scene, n)],
        operators=[n for n in ("submit", "refresh", "open_job") if hasattr(bpy.types, f"FARM_OT_{n}")],
    )
    return 0


if __name__ == "__main__":
    run(main)
