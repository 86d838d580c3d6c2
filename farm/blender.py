"""How the farm starts Blender: the `bpy` module under this Python, or a `blender` binary, with one script either way.

Every run is a separate process with the file's embedded Python disabled (`--disable-autoexec` for the binary,
`use_scripts=False` inside our scripts), and talks back through lines that start with `@@FARM@@ `.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from farm.config import Settings

MARK = "@@FARM@@"
SCRIPTS = Path(__file__).parent / "blender_scripts"


class BlenderNotFound(RuntimeError):
    pass


class BlenderFailed(RuntimeError):
    """Blender ran but did not do what was asked; the message is Blender's own words."""


def blender_command(settings: Settings, script: Path, args: list[str]) -> list[str]:
    """The argv that runs `script` with `args` in Blender."""
    binary = settings.blender
    if not binary and importlib.util.find_spec("bpy") is not None:
        # -P keeps the script's folder off sys.path; the script reads its arguments after "--".
        return [sys.executable, "-P", str(script), "--", *args]
    binary = binary or shutil.which("blender")
    if not binary:
        raise BlenderNotFound("Blender not found: install the bpy wheel (make setup) or set FARM_BLENDER")
    return [
        binary,
        "--background",
        "--factory-startup",
        "--disable-autoexec",
        "-noaudio",
        "--python-exit-code",
        "3",
        "--python",
        str(script),
        "--",
        *args,
    ]


def parse_event(line: str) -> dict[str, Any] | None:
    """The JSON event on a `@@FARM@@ {...}` line, or None for Blender's own output."""
    if not line.startswith(MARK):
        return None
    try:
        event = json.loads(line[len(MARK) :])
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


def blender_error(output: str, limit: int = 12) -> str:
    """The lines of Blender's output that explain a failure, for a job's error or an API message."""
    lines = [ln for ln in output.splitlines() if ln.strip() and not ln.startswith(MARK)]
    wanted = [ln for ln in lines if any(w in ln for w in ("Error", "error", "ERROR", "Traceback", "Cannot", "failed"))]
    return "\n".join((wanted or lines)[-limit:]).strip() or "Blender exited without saying why"


def run_script(settings: Settings, script: Path, args: list[str], timeout: float) -> list[dict[str, Any]]:
    """Run a short Blender script to completion; its events, or BlenderFailed with Blender's words."""
    argv = blender_command(settings, script, args)
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, errors="replace", stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise BlenderFailed(f"Blender did not finish within {timeout:.0f} s") from None
    events = [e for e in map(parse_event, proc.stdout.splitlines()) if e]
    errors = [e["message"] for e in events if e.get("event") == "error"]
    if errors:
        raise BlenderFailed(errors[-1])
    if proc.returncode != 0:
        raise BlenderFailed(blender_error(proc.stdout + "\n" + proc.stderr))
    return events


def probe_scene(settings: Settings, blend: Path) -> dict[str, Any]:
    """Open the file in Blender (scripts off) and read the active scene's range, resolution and engine."""
    events = run_script(settings, SCRIPTS / "scene_probe.py", [str(blend)], settings.probe_timeout_seconds)
    scenes = [e for e in events if e.get("event") == "scene"]
    if not scenes:
        raise BlenderFailed("Blender opened the file but reported no scene")
    scene = scenes[-1]
    scene.pop("event", None)
    return scene
