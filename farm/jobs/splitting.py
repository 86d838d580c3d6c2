"""One still rendered by several workers and merged (`split`): how a frame is cut into parts, pure and table-tested.

Cycles splits by samples: part i renders its own run of the frame's sample sequence (`use_sample_subset`,
`sample_offset`, `sample_subset_length`), so the parts together took exactly the samples one machine would, and
their mean weighted by each part's share of the samples is that machine's noisy image. Other engines split by
tiles: horizontal bands of the frame, each rendered with a few rows of overscan on either side (cropped away when
the bands are stitched), so effects that read neighbouring pixels see the same neighbours as in a whole frame.

Rows count from the bottom, as Blender's render border does.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

SAMPLES, TILES = "samples", "tiles"
MIN_PARTS, MAX_PARTS = 2, 64
OVERSCAN_ROWS = 32  # rows rendered beyond a band's own on either side (filters, outlines, screen-space effects)


def mode_for(engine: str | None) -> str:
    """How a still of this engine is split: Cycles by samples, any other by tiles."""
    return SAMPLES if engine == "CYCLES" else TILES


def sample_runs(samples: int, parts: int) -> list[tuple[int, int]]:
    """(offset, length) of each part's run of samples: consecutive, as even as can be, covering 0..samples-1."""
    if not 1 <= parts <= samples:
        raise ValueError(f"{samples} samples cannot be shared by {parts} parts")
    edges = [samples * i // parts for i in range(parts + 1)]
    return [(edges[i], edges[i + 1] - edges[i]) for i in range(parts)]


@dataclass(frozen=True)
class Band:
    """A tile: the rows a part renders (`rows`, overscan included) and the rows of the frame it gives (`keep`);
    both half-open, from the bottom."""

    rows: tuple[int, int]
    keep: tuple[int, int]


def bands(height: int, parts: int, overscan: int = OVERSCAN_ROWS) -> list[Band]:
    """The frame's rows shared among `parts` bands of near-equal height, each rendered with `overscan` extra rows
    above and below (within the frame)."""
    if not 1 <= parts <= height:
        raise ValueError(f"a frame {height} pixels high cannot be cut into {parts} bands")
    edges = [height * i // parts for i in range(parts + 1)]
    return [
        Band(rows=(max(0, lo - overscan), min(height, hi + overscan)), keep=(lo, hi))
        for lo, hi in itertools.pairwise(edges)
    ]


def frame_size(resolution_x: int, resolution_y: int, percentage: int) -> tuple[int, int]:
    """The frame's size in pixels, as Blender scales both sides."""
    return resolution_x * percentage // 100, resolution_y * percentage // 100


def part_spec(
    *, engine: str | None, samples: int | None, size: tuple[int, int], parts: int, index: int
) -> dict[str, Any]:
    """What the render script needs to render part `index` of `parts`: a run of samples, or a band of rows."""
    spec: dict[str, Any] = {"mode": mode_for(engine), "index": index, "count": parts}
    if spec["mode"] == SAMPLES:
        if not samples:
            raise ValueError("a still split by samples needs its number of samples")
        spec["sample_offset"], spec["sample_length"] = sample_runs(samples, parts)[index]
        spec["samples"] = samples
    else:
        band = bands(size[1], parts)[index]
        spec["rows"], spec["keep"], spec["height"] = list(band.rows), list(band.keep), size[1]
    return spec


def refusal(*, engine: str | None, samples: int | None, size: tuple[int, int] | None, parts: int) -> str | None:
    """Why this still cannot be split in `parts`, in words for the user; None if it can."""
    if mode_for(engine) == SAMPLES:
        if not samples or samples < parts:
            return f"a Cycles still is split by samples: {parts} parts need at least {parts} samples, got {samples}"
    elif size is None or size[1] < parts:
        height = size[1] if size else "an unknown number of"
        return f"a still of this engine is split into bands of rows: {parts} parts need {parts} rows, got {height}"
    return None


def part_key(job_id: str, frame: int, index: int, attempt: int, sha256: str) -> str:
    """Where a part's EXR is stored: one key per attempt, so a renderer that lost its claim only ever deletes its
    own file."""
    return f"jobs/{job_id}/parts/{frame:07d}-{index:02d}-{attempt}-{sha256[:16]}.exr"


# What a part reports of the scene's own output settings, for the merge to write the still as one machine would:
# each name with the type its value must have. Blender reads these from the file, so nothing else is passed on.
RECIPE: dict[str, type | tuple[type, ...]] = {
    "view_transform": str,
    "look": str,
    "exposure": (int, float),
    "gamma": (int, float),
    "display_device": str,
    "dither": (int, float),
    "color_mode": str,
    "color_depth": str,
    "compression": int,
    "quality": int,
    "exr_codec": str,
    "denoise": bool,
    "denoise_prefilter": str,
    "denoise_quality": str,
    "denoise_passes": str,
}
MAX_RECIPE_TEXT = 64


def clean_recipe(raw: object) -> dict[str, Any]:
    """The known settings of a part's report, each of its own type and short; anything else is dropped."""
    if not isinstance(raw, dict):
        return {}
    clean: dict[str, Any] = {}
    for name, kind in RECIPE.items():
        value = raw.get(name)
        if isinstance(value, bool) and kind is not bool:
            continue
        if isinstance(value, kind) and not (isinstance(value, str) and len(value) > MAX_RECIPE_TEXT):
            clean[name] = value
    return clean
