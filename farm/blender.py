"""How the farm starts Blender: the `bpy` module under this Python, or a `blender` binary, with one script either way.

Every run is a separate process with the file's embedded Python disabled (`--disable-autoexec` for the binary,
`use_scripts=False` inside our scripts), and talks back through lines that start with `@@FARM@@ `.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
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


def run_script(
    settings: Settings,
    script: Path,
    args: list[str],
    timeout: float,
    *,
    then: tuple[str, float] | None = None,
    started: subprocess.Popen[str] | None = None,
) -> list[dict[str, Any]]:
    """Run a short Blender script to completion; its events, or BlenderFailed with Blender's words.
    `then=(event, seconds)`: once that event arrives, allow only `seconds` more and then stop Blender, keeping the
    events so far (the probe frame of a scene too slow to time fully). `started`: a process of this script already
    waiting for its arguments on stdin (a spare), given them instead of starting a new one."""
    proc = None
    if started is not None:
        assert started.stdin is not None
        try:
            started.stdin.write(json.dumps(args) + "\n")
            started.stdin.close()
            proc = started
        except OSError:  # it died since it was taken
            _discard(started)
    if proc is None:
        proc = _popen(blender_command(settings, script, args), waiting=False)
    lines: list[str] = []
    deadline = [time.monotonic() + timeout]

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if then and (event := parse_event(line)) and event.get("event") == then[0]:
                deadline[0] = time.monotonic() + then[1]

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while reader.is_alive() and time.monotonic() < deadline[0]:
        reader.join(0.05)
    cut = reader.is_alive()
    if cut:
        proc.kill()
        reader.join(10)
    returncode = proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()
    events = [e for e in map(parse_event, lines) if e]
    errors = [e["message"] for e in events if e.get("event") == "error"]
    if errors:
        raise BlenderFailed(errors[-1])
    if cut and not (then and any(e.get("event") == then[0] for e in events)):
        raise BlenderFailed(f"Blender did not finish within {timeout:.0f} s")
    if returncode != 0 and not cut:
        raise BlenderFailed(blender_error("".join(lines)))
    return events


def _popen(argv: list[str], *, waiting: bool) -> subprocess.Popen[str]:
    """Blender running a script; `waiting`: one that reads its arguments as a JSON line from stdin."""
    return subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        stdin=subprocess.PIPE if waiting else subprocess.DEVNULL,
    )


class SpareProbe:
    """One Blender already started with scene_probe.py, waiting for a file: a submission's probe skips Blender's
    start-up (about half a second). Each serves one file and exits, so nothing crosses between users' files; the
    next is started when a probe ends (FARM_PROBE_SPARE=0 keeps none). A submission that finds none starts its own.
    The spare exits on its own when this process does (its stdin closes)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen[str] | None = None
        self.argv: list[str] = []
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        """A forked child must neither use nor stop its parent's spare."""
        self.lock = threading.Lock()
        self.proc = None

    def take(self, settings: Settings) -> subprocess.Popen[str] | None:
        """The waiting spare if it is alive and started as these settings would start it now."""
        with self.lock:
            proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None and self.argv == _waiting_argv(settings):
            return proc
        _discard(proc)
        return None

    def refill(self, settings: Settings) -> None:
        """Start the next spare unless one waits. A convenience: when it cannot start, probes start their own."""
        if not settings.probe_spare:
            return
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                return
            try:
                self.argv = _waiting_argv(settings)
                self.proc = _popen(self.argv, waiting=True)
            except (OSError, BlenderNotFound):
                self.proc = None


def _discard(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


def _waiting_argv(settings: Settings) -> list[str]:
    return blender_command(settings, PROBE_SCRIPT, ["--wait"])


PROBE_SCRIPT = SCRIPTS / "scene_probe.py"
SPARE_PROBE = SpareProbe()


def probe_scene(settings: Settings, blend: Path, render: dict[str, Any] | None = None) -> dict[str, Any]:
    """Open the file in Blender (scripts off) and read the active scene's range, resolution and engine. With a
    `render` spec (the job's settings, `frame`, `out`), also time one frame: `probe_frame_ms`, or None when it took
    longer than FARM_PROBE_FRAME_SECONDS (then it was stopped), and `probe_image`: the frame's number and file."""
    args = [str(blend), *([json.dumps(render)] if render else [])]
    then = ("scene", settings.probe_frame_seconds) if render else None
    spare = SPARE_PROBE.take(settings)
    try:
        events = run_script(settings, PROBE_SCRIPT, args, settings.probe_timeout_seconds, then=then, started=spare)
    finally:
        SPARE_PROBE.refill(settings)  # after this probe, not during it: it would share the CPU with it
    scenes = [e for e in events if e.get("event") == "scene"]
    if not scenes:
        raise BlenderFailed("Blender opened the file but reported no scene")
    scene = scenes[-1]
    scene.pop("event", None)
    if render:
        timed = [e for e in events if e.get("event") == "probe_frame"]
        scene["probe_frame_ms"] = timed[-1]["ms"] if timed else None
        scene["probe_image"] = {"frame": timed[-1]["frame"], "path": timed[-1]["path"]} if timed else None
    return scene
