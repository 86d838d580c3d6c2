"""FARM_RENDERER=null-benchmark-only: a renderer that renders nothing, for bench/orchestration.py alone.

It goes through everything around Blender — claim, frame storage and records, chunk end, the chord — writing a
1×1 PNG per frame instantly, so the benchmark measures the farm's own cost per task. Never the default; its name
says what it is for, and every frame it makes records it as its device.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from workers.blender_process import Outcome

NULL_RENDERER = "null-benchmark-only"
PIXEL_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360606060000000050001a5f645400000000049454e44ae426082"
)


def render_nothing(spec: dict[str, Any], on_event: Callable[[dict[str, Any]], None]) -> Outcome:
    os.makedirs(spec["out"], exist_ok=True)
    on_event({"event": "ready", "device": NULL_RENDERER})
    for frame in spec["frames"]:
        path = os.path.join(spec["out"], f"{frame:07d}.png")
        with open(path, "wb") as fh:
            fh.write(PIXEL_PNG)
        on_event({"event": "frame", "frame": frame, "path": path, "ms": 0.0})
    return Outcome(returncode=0, stopped=None, log_tail="")
