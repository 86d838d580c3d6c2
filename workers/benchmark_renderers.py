"""Renderers for benchmarks only, never the default; their names say so, and every frame they make records its
renderer as its device.

- `FARM_RENDERER=null-benchmark-only` renders nothing: it goes through everything around Blender — claim, frame
  storage and records, chunk end, the chord — writing a 1×1 PNG per frame at once, so bench/orchestration.py
  measures the farm's own cost per task.
- `FARM_RENDERER=sleep-benchmark-only:SECONDS` does the same after sleeping SECONDS per frame, so bench/scale.py
  can run dozens of workers on one machine with frames that take time but leave the CPU to the farm itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from workers.blender_process import Outcome

NULL_RENDERER = "null-benchmark-only"
SLEEP_RENDERER = "sleep-benchmark-only"
PIXEL_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360606060000000050001a5f645400000000049454e44ae426082"
)


def is_benchmark_renderer(renderer: str) -> bool:
    return renderer == NULL_RENDERER or renderer.startswith(SLEEP_RENDERER + ":")


def frame_seconds(renderer: str) -> float:
    """How long the renderer takes per frame: 0 for the null renderer."""
    return float(renderer.partition(":")[2] or 0)


def render_nothing(
    spec: dict[str, Any],
    on_event: Callable[[dict[str, Any]], None],
    renderer: str,
    *,
    should_stop: Callable[[], str | None],
    on_tick: Callable[[], None],
) -> Outcome:
    """Every frame of the chunk as a 1×1 PNG, after the renderer's time per frame, ticking every second as a Blender
    run does (heartbeats), and stopped as Blender would be when the chunk is canceled or taken back. Frames end on
    Blender's schedule, the n-th `n × seconds` after the start: Blender renders the next frame while the worker
    stores the last one, so storing a frame delays no later frame (unless it takes longer than a frame)."""
    os.makedirs(spec["out"], exist_ok=True)
    on_event({"event": "ready", "device": renderer})
    seconds = frame_seconds(renderer)
    started = time.monotonic()
    for n, frame in enumerate(spec["frames"], 1):
        ends = started + n * seconds
        while (left := ends - time.monotonic()) > 0:
            time.sleep(min(1.0, left))
            on_tick()
            stopped = should_stop()
            if stopped:
                return Outcome(returncode=None, stopped=stopped, log_tail="")
        path = os.path.join(spec["out"], f"{frame:07d}.png")
        with open(path, "wb") as fh:
            fh.write(PIXEL_PNG)
        on_event({"event": "frame", "frame": frame, "path": path, "ms": seconds * 1000})
    return Outcome(returncode=0, stopped=None, log_tail="")
