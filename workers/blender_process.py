"""Run Blender as a child process we can always stop: its own process group, killed with its parent, a stall
timeout, and every line of its output kept in a log file while events are handed over as they arrive.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from farm.blender import parse_event

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL if the worker process dies, so Blender is never orphaned."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Outcome:
    returncode: int | None
    stopped: str | None  # why we stopped it ("canceled", "stalled"), None if it ended by itself
    log_tail: str


class BlenderProcess:
    """One Blender run. `on_event` is called in the caller's thread for each `@@FARM@@` event."""

    def __init__(self, argv: list[str], log_path: Path, *, env: dict[str, str] | None = None) -> None:
        self.argv, self.log_path, self.env = argv, log_path, env
        self.proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.log_path, "a", encoding="utf-8", errors="replace") as log:
            for line in self.proc.stdout:
                log.write(line)
                log.flush()
                self._lines.put(line)
        self._lines.put(None)

    def kill(self) -> None:
        """Stop the whole process group: TERM, then KILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(grace)
                return
            except subprocess.TimeoutExpired:
                continue

    def run(
        self,
        on_event: Callable[[dict[str, Any]], None],
        *,
        should_stop: Callable[[], str | None],
        stall_seconds: float,
        poll_seconds: float = 1.0,
        on_tick: Callable[[], None] | None = None,
    ) -> Outcome:
        """Run to the end, or until `should_stop` names a reason, or no event came for `stall_seconds`."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            env=self.env,
        )
        pump = threading.Thread(target=self._pump, name="blender-output", daemon=True)
        pump.start()
        stopped: str | None = None
        last_event = last_poll = time.monotonic()
        try:
            while True:
                try:
                    line = self._lines.get(timeout=0.25)
                except queue.Empty:
                    line = ""
                if line is None:
                    break
                event = parse_event(line) if line else None
                if event is not None:
                    last_event = time.monotonic()
                    on_event(event)
                now = time.monotonic()
                if stopped is None and now - last_poll >= poll_seconds:
                    last_poll = now
                    if on_tick:
                        on_tick()
                    stopped = should_stop()
                    if stopped is None and now - last_event > stall_seconds:
                        stopped = f"stalled: no frame finished in {stall_seconds:.0f} s"
                    if stopped:
                        self.kill()
        finally:
            self.kill()
            pump.join(timeout=10)
        return Outcome(returncode=self.proc.wait(), stopped=stopped, log_tail=self.tail())

    def tail(self, max_bytes: int = 8192) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - max_bytes))
                return fh.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""
