"""Run Blender as a child process we can always stop: its own process group, killed with its parent, a stall
timeout, every line of its output kept in a log file for people, and its events (from its private pipe, never from
its output: see farm/blender/launcher.py) handed over as they arrive.

Blender's output and events are pumped by helper threads: an exception in either (a full disk under the log, an
event that cannot be parsed) ends the run at once with that exception as its reason, instead of leaving the chunk
to wait for the stall timeout. Blender's peak resident memory (VmHWM) is sampled while it runs, so a Blender that the
kernel's OOM killer took can be told from one that crashed.

A process can serve one run (it exits when the chunk is done) or many (warm: it reads one chunk per stdin line and
says `done` after each); `run` handles both, and the log file can change between chunks. A chunk is judged by its
events: once Blender said `done`, how its process ends is only written to the log.
"""

from __future__ import annotations

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

from farm.blender.launcher import LOG_EVENT_PREFIX, Child, file_tail, launch
from farm.config import Settings


@dataclass
class Outcome:
    returncode: int | None  # 0 once Blender said the chunk was done, however its process ended after that
    stopped: str | None  # why we stopped it ("canceled", "stalled"), None if it ended by itself
    log_tail: str
    failure: BaseException | None = None  # what killed a helper thread, which ended the run
    peak_rss: int = 0  # the most resident memory Blender was seen to hold (bytes), 0 if never sampled


class BlenderProcess:
    """A Blender child. `on_event` is called in the caller's thread for each event."""

    def __init__(self, settings: Settings, argv: list[str], log_path: Path, hide: dict[str, str] | None = None) -> None:
        self.settings, self.argv, self.log_path = settings, argv, log_path
        self.child: Child | None = None
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._log: IO[str] | None = None
        self._log_lock = threading.Lock()
        self._hide: list[tuple[str, str]] = sorted((hide or {}).items(), key=lambda item: -len(item[0]))
        self._output: threading.Thread | None = None
        self.failure: BaseException | None = None
        self.peak_rss = 0
        self.on_output: Callable[[str], None] | None = None  # sees each line too, during `run` (progress)

    @property
    def proc(self) -> subprocess.Popen[str] | None:
        return self.child.proc if self.child else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def set_log(self, path: Path, hide: dict[str, str] | None = None) -> None:
        """Send Blender's output to another file from now on (a warm process moving to its next chunk). `hide`:
        this machine's paths and what the log says instead (users read the log; the worker's folders are not theirs
        to know)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._log_lock:
            if self._log:
                self._log.close()
            self.log_path, self._log = path, open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
            if hide is not None:
                self._hide = sorted(hide.items(), key=lambda item: -len(item[0]))  # the longest path first

    def write_log(self, text: str) -> None:
        for path, shown in self._hide:
            text = text.replace(path, shown)
        with self._log_lock:
            if self._log:
                self._log.write(text)
                self._log.flush()

    def _pump_output(self) -> None:
        """Blender's output, to the log, and to `on_output` (progress, which treats it as the untrusted text it
        is): nothing in it is read as an event."""
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.write_log(line)
            listener = self.on_output
            if listener is not None:
                listener(line)

    def _pump_events(self) -> None:
        assert self.child is not None
        for event in self.child.read_events():
            self.write_log(f"{LOG_EVENT_PREFIX}{json.dumps(event)}\n")  # for people reading the log; never parsed
            self._events.put(event)
        self._events.put(None)

    def _helper(self, target: Callable[[], None], name: str) -> threading.Thread:
        """A daemon thread whose death is never silent: its exception is kept, and the run loop is woken to end the
        run with it."""

        def guarded() -> None:
            try:
                target()
            except BaseException as exc:
                if self.failure is None:
                    self.failure = exc
                self._events.put({})  # wake the run loop
                raise

        thread = threading.Thread(target=guarded, name=name, daemon=True)
        thread.start()
        return thread

    def start(self, *, keep_stdin: bool = False) -> None:
        """Start Blender in a process group of its own, killed if this worker process dies: never orphaned."""
        self.set_log(self.log_path)
        self.child = launch(
            self.settings,
            self.argv,
            stdout=subprocess.PIPE,
            stdin=subprocess.PIPE if keep_stdin else subprocess.DEVNULL,
            die_with_parent=True,
            new_session=True,
        )
        self.failure, self.peak_rss = None, 0
        self._output = self._helper(self._pump_output, "blender-output")
        self._helper(self._pump_events, "blender-events")

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
        if self._output is not None:
            self._output.join(5)  # the log gets Blender's last words
        if self.child is not None:
            self.child.close()
        with self._log_lock:
            if self._log:
                self._log.close()
                self._log = None

    def finish(self) -> None:
        """After the chunk's last event: let Blender exit (or kill it if it lingers); an abnormal exit is logged."""
        assert self.child is not None
        code = self.child.wait_exit()
        if code != 0:
            how = f"signal {-code}" if code < 0 else f"status {code}"
            self.write_log(f"farm: Blender exited with {how} after the chunk was done (not a failure)\n")
        self.close()

    def _status_kb(self, field: str) -> int:
        """A memory figure of the Blender process from /proc (0 if it is gone)."""
        if not self.alive:
            return 0
        assert self.proc is not None
        try:
            with open(f"/proc/{self.proc.pid}/status") as fh:
                return next((int(ln.split()[1]) for ln in fh if ln.startswith(f"{field}:")), 0)
        except OSError:
            return 0

    def rss_bytes(self) -> int:
        """Resident memory of the Blender process now (0 if it is gone)."""
        return self._status_kb("VmRSS") * 1024

    def sample_peak(self) -> None:
        """Keep Blender's peak resident memory (VmHWM): once the kernel killed it, /proc has nothing left to say."""
        self.peak_rss = max(self.peak_rss, self._status_kb("VmHWM") * 1024)

    def run(
        self,
        on_event: Callable[[dict[str, Any]], None],
        *,
        should_stop: Callable[[], str | None],
        stall_seconds: float,
        poll_seconds: float = 1.0,
        on_tick: Callable[[], None] | None = None,
        on_output: Callable[[str], None] | None = None,
        keep: bool = False,
    ) -> Outcome:
        """Run until Blender says `done`, or its events end (it exited or died), or `should_stop` names a reason,
        or no event came for `stall_seconds`, or a helper thread died (`failure`). Starts the process if needed.
        `on_output` is handed each line of Blender's output (in the output thread) while this run lasts.
        `keep`: a warm process stays alive after `done`; else it is let go, and how it exits does not change the
        outcome."""
        self.on_output = on_output
        if self.proc is None:
            self.start()
        stopped: str | None = None
        finished = False
        last_event = last_poll = time.monotonic()
        self.sample_peak()
        try:
            while True:
                try:
                    event = self._events.get(timeout=0.25)
                except queue.Empty:
                    event = {}
                if event is None or self.failure is not None:
                    break
                if event:
                    last_event = time.monotonic()
                    on_event(event)
                    if event.get("event") == "done":
                        finished = True
                        break
                now = time.monotonic()
                if stopped is None and now - last_poll >= poll_seconds:
                    last_poll = now
                    self.sample_peak()
                    if on_tick:
                        on_tick()
                    stopped = should_stop()
                    if stopped is None and now - last_event > stall_seconds:
                        stopped = f"stalled: no frame finished in {stall_seconds:.0f} s"
                    if stopped:
                        self.kill()
        finally:
            self.on_output = None
            if not finished:
                self.close()
            elif not keep:
                self.finish()
        assert self.proc is not None
        return Outcome(
            returncode=0 if finished else self.proc.wait(),
            stopped=stopped,
            log_tail=self.tail(),
            failure=self.failure,
            peak_rss=self.peak_rss,
        )

    def tail(self, max_bytes: int = 8192) -> str:
        return file_tail(self.log_path, max_bytes)
