"""A one-line progress bar for jobs followed from a terminal (`farm submit --wait`, `farm demo`)."""

from __future__ import annotations

import sys
from typing import Any

import click

from farm.cli.client import TERMINAL


def progress_line(job: dict[str, Any], width: int = 30) -> str:
    """`[#####.....]  27.5 %  12/48 frames  RENDERING  avg 812 ms  eta 29 s`: the bar and percentage move within a
    frame (Blender's own progress), the frame count when a frame is stored."""
    render = job["render"]
    done, total = render["frames_rendered"], render["frames_to_render"]
    percent = render.get("progress")
    if percent is None:  # a farm from before live progress
        percent = 100 * done / total if total else 100.0
    filled = min(width, int(width * percent / 100))
    parts = [f"[{'#' * filled}{'.' * (width - filled)}] {percent:5.1f} %  {done}/{total} frames", job["status"]]
    if render.get("average_render_time"):
        parts.append(f"avg {render['average_render_time']:.0f} ms")
    if render.get("eta_seconds") and job["status"] not in TERMINAL:
        parts.append(f"eta {render['eta_seconds']:.0f} s")
    return "  ".join(parts)


class ProgressPrinter:
    """Redraws one line on a terminal; prints a line per change when piped."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = ""

    def __call__(self, job: dict[str, Any]) -> None:
        line = progress_line(job)
        if line == self.last:
            return
        self.last = line
        if self.tty:
            click.echo(f"\r{line}\033[K", nl=False, err=True)
        else:
            click.echo(line, err=True)

    def close(self) -> None:
        if self.tty and self.last:
            click.echo(err=True)
