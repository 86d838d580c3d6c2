"""Farm Submit: a Render Properties panel that sends the open file to the farm and follows its job.

Runs inside Blender 4.2+, installed as an extension (blender_manifest.toml) or as a legacy add-on (bl_info), from the
zip `farm addon` writes. The zip carries the farm's own packing and sending code, and blender-asset-tracer, under
`vendor/`: the same code as `farm submit`, not a copy kept by hand (farm/addon/building.py).

Blender's data is touched only here, on its main thread; the packing, uploading and following run in a thread
(farm/addon/submitting.py) whose status a timer copies into the panel. Headless (`blender -b`, the bpy module) there is
no event loop, so no timer runs: there `bpy.ops.farm.submit()` returns once the job exists (its id in
`scene.farm_job_id`), and `bpy.ops.farm.refresh()` copies the latest status.
"""

import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

# The vendored packages (`farm`, `blender_asset_tracer`) import each other by their top-level names.
_VENDOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendor")
if _VENDOR not in sys.path:
    sys.path.insert(0, _VENDOR)

import bpy  # noqa: E402

from farm.addon.submitting import Task, job_page  # noqa: E402
from farm.cli.client import TERMINAL, FarmClient  # noqa: E402

bl_info = {
    "name": "Farm Submit",
    "author": "farm",
    "version": (0, 1, 0),
    "blender": (4, 2, 0),
    "location": "Properties > Render > Farm",
    "description": "Render the open file on your farm and follow its job",
    "category": "Render",
}

TICK_SECONDS = 0.5
_task: Task | None = None
_target: tuple[str, str] = ("", "")  # (file, scene) the running task's job id belongs to


class FarmPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    url: bpy.props.StringProperty(
        name="Farm URL", description="The farm's web address", default="http://127.0.0.1:5000"
    )
    token: bpy.props.StringProperty(
        name="Token",
        description="An API token (farm tokens create); empty if the farm asks for none",
        subtype="PASSWORD",
    )

    def draw(self, context: bpy.types.Context) -> None:
        self.layout.prop(self, "url")
        self.layout.prop(self, "token")


def _prefs(context: bpy.types.Context) -> FarmPreferences:
    return context.preferences.addons[__package__].preferences


def _client(context: bpy.types.Context) -> FarmClient:
    prefs = _prefs(context)
    return FarmClient(prefs.url, timeout=30.0, token=prefs.token or None)


def _uploading() -> bool:
    return _task is not None and _task.alive and not _task.status.job_id


def _apply() -> None:
    """Copy the task's status into the panel's properties (main thread only)."""
    if _task is None:
        return
    status = _task.status
    wm = bpy.context.window_manager
    wm.farm_status, wm.farm_progress, wm.farm_error = status.text, status.fraction, status.error
    wm.farm_uploaded, wm.farm_warnings = status.uploaded, "\n".join(status.warnings)
    scene = bpy.data.scenes.get(_target[1])
    if status.job_id and scene is not None and bpy.data.filepath == _target[0] and scene.farm_job_id != status.job_id:
        scene.farm_job_id = status.job_id
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type == "PROPERTIES":
                area.tag_redraw()


def _tick() -> float | None:
    _apply()
    return None if _task is None or _task.status.done else TICK_SECONDS


def _begin(task: Task, context: bpy.types.Context) -> None:
    """Make `task` the one the panel shows (a previous one stops following its job)."""
    global _task, _target
    if _task is not None:
        _task.stop()
    _task, _target = task, (bpy.data.filepath, context.scene.name)
    if not bpy.app.timers.is_registered(_tick):
        bpy.app.timers.register(_tick, first_interval=TICK_SECONDS)


def _file_to_send() -> tuple[Path, Path | None]:
    """The .blend the farm gets, and whether it is a copy saved for this submission. A saved file without changes
    goes as it is; otherwise a copy is saved beside it (so its relative paths still hold), or in the temporary folder
    for a file never saved. The open file itself, its name and its unsaved state are left alone."""
    if bpy.data.filepath and not bpy.data.is_dirty:
        return Path(bpy.data.filepath), None
    folder = os.path.dirname(bpy.data.filepath) or tempfile.gettempdir()
    stem = Path(bpy.data.filepath).stem or "untitled"
    # A name no file has: saving over one, Blender would keep the old one as a .blend1 beside the artist's files.
    copy = Path(folder) / f".{stem}-farm-{uuid.uuid4().hex[:12]}.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(copy), copy=True, check_existing=False)
    return copy, copy


class FARM_OT_submit(bpy.types.Operator):
    """Render the open file on the farm: its frame range, only the files the farm lacks are uploaded"""

    bl_idname = "farm.submit"
    bl_label = "Submit to Farm"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return not _uploading()

    def execute(self, context: bpy.types.Context) -> set[str]:
        if not _prefs(context).url:
            self.report({"ERROR"}, "Set the farm's URL in the add-on's preferences")
            return {"CANCELLED"}
        scene = context.scene
        fields = {
            "name": Path(bpy.data.filepath).stem or "untitled",
            "frame_start": scene.frame_start,
            "frame_end": scene.frame_end,
            "chunk_size": scene.farm_chunk_size or None,
        }
        try:
            blend, copy = _file_to_send()
        except (OSError, RuntimeError) as exc:
            self.report({"ERROR"}, f"Could not save a copy to send: {exc}")
            return {"CANCELLED"}
        task = Task(_client(context))
        _begin(task, context)
        task.submit(blend, fields, copy)
        if not bpy.app.background:
            self.report({"INFO"}, "Submitting to the farm")
            return {"FINISHED"}
        while not task.status.job_id and not task.status.done:  # headless: no timer would ever report the job
            time.sleep(0.1)
        _apply()
        if not task.status.job_id:
            self.report({"ERROR"}, task.status.error)
            return {"CANCELLED"}
        return {"FINISHED"}


class FARM_OT_refresh(bpy.types.Operator):
    """Show the job's latest status (following it again after the file was reopened)"""

    bl_idname = "farm.refresh"
    bl_label = "Refresh"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return bool(context.scene.farm_job_id)

    def execute(self, context: bpy.types.Context) -> set[str]:
        job_id = context.scene.farm_job_id
        followed = _task is not None and _task.status.job_id == job_id
        if not followed or not (_task.alive or _task.status.job_status in TERMINAL):  # reopened, or lost touch
            task = Task(_client(context))
            _begin(task, context)
            task.follow(job_id)
        _apply()
        return {"FINISHED"}


class FARM_OT_open_job(bpy.types.Operator):
    """Open the job's page on the farm in a web browser"""

    bl_idname = "farm.open_job"
    bl_label = "Open Job Page"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return bool(context.scene.farm_job_id)

    def execute(self, context: bpy.types.Context) -> set[str]:
        bpy.ops.wm.url_open(url=job_page(_prefs(context).url, context.scene.farm_job_id))
        return {"FINISHED"}


class FARM_PT_submit(bpy.types.Panel):
    bl_label = "Farm"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "render"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        scene, wm, prefs = context.scene, context.window_manager, _prefs(context)
        col = layout.column(align=True)
        col.prop(scene, "frame_start", text="Frame Start")
        col.prop(scene, "frame_end", text="End")
        layout.prop(scene, "farm_chunk_size")
        if prefs.url:
            layout.label(text=prefs.url, icon="WORLD")
        else:
            layout.label(text="Set the farm's URL in the add-on's preferences", icon="ERROR")
        layout.operator("farm.submit", icon="RENDER_ANIMATION")
        if wm.farm_status:
            layout.progress(factor=wm.farm_progress, type="BAR", text=wm.farm_status)
        for line in filter(None, (wm.farm_uploaded, *wm.farm_warnings.splitlines())):
            layout.label(text=line)
        if wm.farm_error:
            layout.label(text=wm.farm_error, icon="ERROR")
        if scene.farm_job_id:
            row = layout.row(align=True)
            row.operator("farm.open_job", icon="URL")
            row.operator("farm.refresh", icon="FILE_REFRESH", text="")


CLASSES = (FarmPreferences, FARM_OT_submit, FARM_OT_refresh, FARM_OT_open_job, FARM_PT_submit)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.farm_job_id = bpy.props.StringProperty(name="Farm Job", description="The last job submitted")
    bpy.types.Scene.farm_chunk_size = bpy.props.IntProperty(
        name="Chunk Size", description="Frames per task; 0 lets the farm choose", default=0, min=0, soft_max=100
    )
    wm = bpy.types.WindowManager
    wm.farm_status = bpy.props.StringProperty()
    wm.farm_progress = bpy.props.FloatProperty(min=0.0, max=1.0)
    wm.farm_error = bpy.props.StringProperty()
    wm.farm_uploaded = bpy.props.StringProperty()
    wm.farm_warnings = bpy.props.StringProperty()


def unregister() -> None:
    global _task
    if _task is not None:
        _task.stop()
        _task = None
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
    for name in ("farm_status", "farm_progress", "farm_error", "farm_uploaded", "farm_warnings"):
        delattr(bpy.types.WindowManager, name)
    del bpy.types.Scene.farm_job_id, bpy.types.Scene.farm_chunk_size
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
