"""Run Blender as a child process we can always stop: its own process group, killed with its parent, a stall
timeout, and every line of its output kept in a log file while events are handed over as they arrive.

A process can serve one run (it exits when the chunk is done) or many (warm: it reads one chunk per stdin line and
says `done` after each); `run` handles both, and the log file can change between chunks.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from farm.blender import parse_event

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL if the worker process dies, so Blender is never orphaned."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Outcome:
    returncode: int | None  # 0 when a warm process finished the chunk and lives on
    stopped: str | None  # why we stopped it ("canceled", "stalled"), None if it ended by itself
    log_tail: str


class BlenderProcess:
    """A Blender child. `on_event` is called in the caller's thread for each `@@FARM@@` event."""

    def __init__(self, argv: list[str], log_path: Path, *, env: dict[str, str] | None = None) -> None:
        self.argv, self.log_path, self.env = argv, log_path, env
        self.proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._log: IO[str] | None = None
        self._log_lock = threading.Lock()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def set_log(self, path: Path) -> None:
        """Send Blender's output to another file from now on (a warm process moving to its next chunk)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._log_lock:
            if self._log:
                self._log.close()
            self.log_path, self._log = path, open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._log_lock:
                if self._log:
                    self._log.write(line)
                    self._log.flush()
            self._lines.put(line)
        self._lines.put(None)

    def start(self, *, keep_stdin: bool = False) -> None:
        self.set_log(self.log_path)
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if keep_stdin else subprocess.DEVNULL,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            env=self.env,
        )
        threading.Thread(target=self._pump, name="blender-output", daemon=True).start()

    def send(self, message: dict[str, Any]) -> bool:
        """One JSON line to a warm process; False if it is gone."""
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

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

    def close(self) -> None:
        self.kill()
        with self._log_lock:
            if self._log:
                self._log.close()
                self._log = None

    def rss_bytes(self) -> int:
        """Resident memory of the Blender process now (0 if it is gone)."""
        if not self.alive:
            return 0
        assert self.proc is not None
        try:
            with open(f"/proc/{self.proc.pid}/status") as fh:
                kb = next((int(ln.split()[1]) for ln in fh if ln.startswith("VmRSS:")), 0)
        except OSError:
            return 0
        return kb * 1024

    def run(
        self,
        on_event: Callable[[dict[str, Any]], None],
        *,
        should_stop: Callable[[], str | None],
        stall_seconds: float,
        poll_seconds: float = 1.0,
        on_tick: Callable[[], None] | None = None,
        until: str | None = None,
    ) -> Outcome:
        """Run until Blender exits, or sends the `until` event (a warm process's `done`: it stays alive), or
        `should_stop` names a reason, or no event came for `stall_seconds`. Starts the process if needed."""
        if self.proc is None:
            self.start()
        stopped: str | None = None
        finished = False
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
                    if until and event.get("event") == until:
                        finished = True
                        break
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
            if not finished:
                self.close()
        assert self.proc is not None
        return Outcome(returncode=0 if finished else self.proc.wait(), stopped=stopped, log_tail=self.tail())

    def tail(self, max_bytes: int = 8192) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - max_bytes))
                return fh.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""
