"""Progress inside a frame, read from the lines Blender prints while it renders: Cycles'
`Fra:12 … | Scene, ViewLayer | Sample 37/128` (older versions: `Path Tracing Sample 37/128`) and EEVEE's
`Fra:12 … | Rendering 5 / 64 samples`.

Nothing Blender prints is trusted: a .blend can print any line (a driver's expression is echoed verbatim). So a
line counts only when it has exactly one of these shapes, is short, names the frame the chunk renders now, and its
numbers make sense (1 ≤ total, done ≤ total); the share is capped below a whole frame (only the frame's image, seen
by the worker, finishes a frame); and it only ever sets the progress number of the chunk whose Blender printed it.
The worst a lying file can do is make its own chunk's bar jump.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence

MAX_LINE = 1024  # Blender's progress lines are under 200 characters; longer lines are not read at all
MAX_NUMBER = 10**9
CEILING = 0.99  # the most of a frame that output can claim

_SHAPES = (
    re.compile(r"Fra:(\d{1,10}) [^|]{0,200}(?:\|[^|]{0,200}){0,8}\| (?:Path Tracing )?Sample (\d{1,10})/(\d{1,10})\b"),
    re.compile(r"Fra:(\d{1,10}) [^|]{0,200}(?:\|[^|]{0,200}){0,8}\| Rendering (\d{1,10}) / (\d{1,10}) samples\b"),
)


def parse(line: str) -> tuple[int, float] | None:
    """(frame, share of it rendered, 0 to CEILING) from one line of Blender's output, or None."""
    if len(line) > MAX_LINE:
        return None
    for shape in _SHAPES:
        match = shape.match(line)
        if match:
            frame, done, total = (int(g) for g in match.groups())
            if not 1 <= total <= MAX_NUMBER or done > total:
                return None
            return frame, min(done / total, CEILING)
    return None


class FrameProgress:
    """The share of the frame a chunk's Blender renders now. Fed by the thread that reads Blender's output, read by
    the worker's ticks: `expect` names the frame the chunk waits for next (from the chunk, never from Blender)."""

    def __init__(self, frames: Sequence[int]) -> None:
        self._lock = threading.Lock()
        self._frames = list(frames)
        self._expected: int | None = self._frames[0] if self._frames else None
        self.fraction = 0.0

    def feed(self, line: str) -> None:
        found = parse(line)
        if found is None:
            return
        frame, fraction = found
        with self._lock:
            if frame == self._expected:
                self.fraction = fraction

    def frame_done(self, frame: int) -> None:
        """`frame` is stored: the chunk now waits for the next of its frames not yet done."""
        with self._lock:
            if frame in self._frames:
                self._frames.remove(frame)
            self._expected = self._frames[0] if self._frames else None
            self.fraction = 0.0
