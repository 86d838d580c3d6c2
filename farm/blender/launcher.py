"""How the farm starts Blender: the `bpy` module under this Python, or a `blender` binary, with one script either way.

Every run is a separate process with the file's embedded Python disabled (`--disable-autoexec` for the binary,
`use_scripts=False` inside our scripts), and with the least it needs (`launch`):
- its events come through a pipe of its own (an inherited descriptor, FARM_EVENTS_FD), never from its output: Blender
  prints what a file tells it to, so its stdout and stderr are only a log for people;
- its environment is an allow-list (PATH, locale, OCIO, a few GPU and graphics variables), with HOME and TMPDIR in a
  folder of its own, removed when it ends: none of the farm's secrets (database, broker and S3 credentials, the
  Flask key) reach it;
- optionally a memory cap (FARM_BLENDER_MAX_MEMORY_MB, as RLIMIT_AS) and a lower priority (FARM_BLENDER_NICE).
A run is judged by its events: each script ends by saying `end` and leaving with `os._exit`, so what Blender does
after that (a hang, an abort in its teardown) is logged, never taken for a failure.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from farm.config import Settings

log = logging.getLogger(__name__)
SCRIPTS = Path(__file__).parent / "scripts"
MAX_EVENT_BYTES = 1 << 20  # our scripts' events are a few KiB; a longer line is cut and dropped
EXIT_GRACE_SECONDS = 5.0  # how long a Blender that said `end` may take to exit before it is killed
LOG_EVENT_PREFIX = "farm: event "  # how a worker copies an event into a chunk's log, for people
ENV_NAMES = frozenset(
    {"PATH", "LANG", "LANGUAGE", "TZ", "OCIO", "LD_LIBRARY_PATH", "DISPLAY", "WAYLAND_DISPLAY", "XDG_RUNTIME_DIR"}
)
ENV_PREFIXES = ("LC_", "CUDA_VISIBLE", "HIP_VISIBLE", "ROCR_VISIBLE", "ONEAPI_DEVICE", "MESA_", "LIBGL_", "EGL_")
PR_SET_PDEATHSIG = 1


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
        *(["--enable-autoexec"] if settings.trusted_scripts else ["--disable-autoexec"]),
        "-noaudio",
        "--python-exit-code",
        "3",
        "--python",
        str(script),
        "--",
        *args,
    ]


def blender_env(settings: Settings, home: Path, events_fd: int) -> dict[str, str]:
    """What Blender may see of this process's environment: the allow-list, a home of its own, the events pipe, and
    GPU kernel caches shared by every Blender on the machine (compiled kernels, not secrets)."""
    env = {k: v for k, v in os.environ.items() if k in ENV_NAMES or k.startswith(ENV_PREFIXES)}
    kernels = settings.cache_dir / "gpu-kernels"
    env.update(
        HOME=str(home),
        TMPDIR=str(home / "tmp"),
        FARM_EVENTS_FD=str(events_fd),
        CUDA_CACHE_PATH=str(kernels / "cuda"),
        OPTIX_CACHE_PATH=str(kernels / "optix"),
    )
    return env


class Child:
    """A started Blender: the process, the read end of its events pipe, and its own folder (HOME)."""

    def __init__(self, proc: subprocess.Popen[str], events: IO[str], home: Path) -> None:
        self.proc, self.events, self.home = proc, events, home

    def read_events(self) -> Iterator[dict[str, Any]]:
        """Each event as it arrives, until the script closes the pipe (it said `end`) or the process is gone."""
        while line := self.events.readline(MAX_EVENT_BYTES):
            if not line.endswith("\n"):  # over the bound: drop the rest of that line too
                while (rest := self.events.readline(MAX_EVENT_BYTES)) and not rest.endswith("\n"):
                    pass
                continue
            with contextlib.suppress(json.JSONDecodeError):
                if isinstance(event := json.loads(line), dict):
                    yield event

    def wait_exit(self, grace: float = EXIT_GRACE_SECONDS) -> int:
        """The exit status of a Blender that has finished its work; one that lingers past `grace` is killed."""
        try:
            return self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("Blender (pid %d) did not exit %.0f s after its work; killed", self.proc.pid, grace)
            self.kill()
            return self.proc.wait()

    def kill(self) -> None:
        """Stop it, with everything it started when it leads its own process group."""
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(self.proc.pid) == self.proc.pid:
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.kill()

    def close(self) -> None:
        """Kill it if it still runs, close its pipes and remove its folder."""
        self.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.events):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        shutil.rmtree(self.home, ignore_errors=True)


def launch(
    settings: Settings,
    argv: list[str],
    *,
    stdout: int | None = None,
    stdin: int = subprocess.DEVNULL,
    die_with_parent: bool = False,
    new_session: bool = False,
) -> Child:
    """Start Blender with the least it needs (see the module's docstring). Its working directory is its own folder;
    our scripts move into the chunk's work folder before they render. Its output goes to `stdout` (a pipe), else to
    `output.log` in its folder. `die_with_parent`: SIGKILL when the thread that started it ends (a worker's pool
    process; not a web request's thread, which may end first)."""
    base = settings.cache_dir / "blender"
    base.mkdir(parents=True, exist_ok=True)
    sweep_orphans(base)
    home = Path(tempfile.mkdtemp(prefix=f"run-{os.getpid()}-", dir=base))
    (home / "tmp").mkdir()
    max_bytes, nice = settings.blender_max_memory_mb * 2**20, settings.blender_nice

    def confine() -> None:  # in the child, before exec: plain system calls only
        if die_with_parent:
            with contextlib.suppress(OSError):
                ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if max_bytes:
            resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))
        if nice:
            os.nice(nice)

    read_fd, write_fd = os.pipe()
    try:
        with contextlib.ExitStack() as stack:
            output = stdout if stdout is not None else stack.enter_context(open(home / "output.log", "wb"))
            proc = subprocess.Popen(
                argv,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=stdin,
                text=True,
                errors="replace",
                bufsize=1,
                cwd=home,
                env=blender_env(settings, home, write_fd),
                pass_fds=(write_fd,),
                start_new_session=new_session,
                preexec_fn=confine if (die_with_parent or max_bytes or nice) else None,
            )
    except BaseException:
        os.close(read_fd)
        shutil.rmtree(home, ignore_errors=True)
        raise
    finally:
        os.close(write_fd)  # the child holds the only write end: the pipe ends when it does
    return Child(proc, open(read_fd, encoding="utf-8", errors="replace"), home)


def sweep_orphans(base: Path) -> None:
    """Remove the folders (`<kind>-<pid>-<random>`) whose process is gone (killed before it could): a Blender's
    home, a job's project on a worker. Each is named after the process that made it, and is used by no other."""
    for entry in base.iterdir():
        _, _, rest = entry.name.partition("-")
        starter = rest.partition("-")[0]
        if not starter.isdigit():
            continue
        try:
            os.kill(int(starter), 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


def blender_error(output: str, limit: int = 12) -> str:
    """The lines of Blender's output that explain a failure, for a job's error or an API message."""
    lines = [ln for ln in output.splitlines() if ln.strip() and not ln.startswith(LOG_EVENT_PREFIX)]
    wanted = [ln for ln in lines if any(w in ln for w in ("Error", "error", "ERROR", "Traceback", "Cannot", "failed"))]
    return "\n".join((wanted or lines)[-limit:]).strip() or "Blender exited without saying why"


def file_tail(path: Path, max_bytes: int = 16384) -> str:
    """The last `max_bytes` of a Blender log (empty if there is none yet), for a failure's reason."""
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - max_bytes))
        return fh.read().decode("utf-8", "replace")
    return ""


def run_script(
    settings: Settings,
    script: Path,
    args: list[str],
    timeout: float,
    *,
    then: tuple[str, float] | None = None,
    started: Child | None = None,
) -> list[dict[str, Any]]:
    """Run a short Blender script to completion; its events, or BlenderFailed with Blender's words.
    It succeeded when the script said `end` with code 0 and no `error`, whatever Blender's exit status after that.
    `then=(event, seconds)`: once that event arrives, allow only `seconds` more and then stop Blender, keeping the
    events so far (the probe frame of a scene too slow to time fully). `started`: a process of this script already
    waiting for its arguments on stdin (a spare), given them instead of starting a new one."""
    child = None
    if started is not None:
        assert started.proc.stdin is not None
        try:
            started.proc.stdin.write(json.dumps(args) + "\n")
            started.proc.stdin.close()
            child = started
        except OSError:  # it died since it was taken
            started.close()
    if child is None:
        child = launch(settings, blender_command(settings, script, args))
    events: list[dict[str, Any]] = []
    deadline = [time.monotonic() + timeout]

    def read() -> None:
        for event in child.read_events():
            events.append(event)
            if then and event.get("event") == then[0]:
                deadline[0] = time.monotonic() + then[1]

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        while reader.is_alive() and time.monotonic() < deadline[0]:
            reader.join(0.05)
        cut = reader.is_alive()
        if cut:
            child.kill()
            reader.join(10)
        returncode = child.wait_exit()
        output = file_tail(child.home / "output.log")
    finally:
        child.close()
    errors = [str(e.get("message")) for e in events if e.get("event") == "error"]
    if errors:
        raise BlenderFailed(errors[-1])
    if cut:
        if then and any(e.get("event") == then[0] for e in events):
            return events
        raise BlenderFailed(f"Blender did not finish within {timeout:.0f} s")
    ended = next((e for e in events if e.get("event") == "end"), None)
    if ended is None or ended.get("code") != 0:
        reason = blender_error(output)
        if returncode < 0:
            reason = f"Blender was killed by signal {-returncode}: {reason}"
        raise BlenderFailed(reason)
    if returncode != 0:
        log.info("%s ended its work, then Blender exited with %d (ignored)", script.name, returncode)
    return events


class SpareProbe:
    """One Blender already started with scene_probe.py, waiting for a file: a submission's probe skips Blender's
    start-up (about half a second). Each serves one file and exits, so nothing crosses between users' files; the
    next is started when a probe ends (FARM_PROBE_SPARE=0 keeps none). A submission that finds none starts its own.
    The spare exits on its own when this process does (its stdin closes)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.child: Child | None = None
        self.argv: list[str] = []
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        """A forked child must neither use nor stop its parent's spare."""
        self.lock = threading.Lock()
        self.child = None

    def take(self, settings: Settings) -> Child | None:
        """The waiting spare if it is alive and started as these settings would start it now."""
        with self.lock:
            child, self.child = self.child, None
        if child is None:
            return None
        if child.proc.poll() is None and self.argv == _waiting_argv(settings):
            return child
        child.close()
        return None

    def refill(self, settings: Settings) -> None:
        """Start the next spare unless one waits. A convenience: when it cannot start, probes start their own."""
        if not settings.probe_spare:
            return
        with self.lock:
            if self.child is not None and self.child.proc.poll() is None:
                return
            try:
                self.argv = _waiting_argv(settings)
                self.child = launch(settings, self.argv, stdin=subprocess.PIPE)
            except (OSError, BlenderNotFound):
                self.child = None


def _waiting_argv(settings: Settings) -> list[str]:
    return blender_command(settings, PROBE_SCRIPT, ["--wait"])


PROBE_SCRIPT = SCRIPTS / "scene_probe.py"
SPARE_PROBE = SpareProbe()


def probe_scene(settings: Settings, blend: Path, render: dict[str, Any] | None = None) -> dict[str, Any]:
    """Open the file in Blender (scripts off) and read the active scene's range, resolution and engine, and the
    files it reads from disk (`dependencies`, as farm/blender/scripts/dependencies.py reports them). With a
    `render` spec (the job's settings, `frame`, `out`), also time one frame: `probe_frame_ms`, or None when it took
    longer than FARM_PROBE_FRAME_SECONDS (then it was stopped), and `probe_frame`: the frame's number (its image is
    `out/probe.<ext>`: the caller knows where, no event names a path)."""
    args = [str(blend), json.dumps({"render": render, "trusted_scripts": settings.trusted_scripts})]
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
    scene["dependencies"] = [e for e in events if e.get("event") == "dependency"]
    if render:
        timed = [e for e in events if e.get("event") == "probe_frame"]
        scene["probe_frame_ms"] = timed[-1]["ms"] if timed else None
        scene["probe_frame"] = timed[-1]["frame"] if timed else None
    return scene
