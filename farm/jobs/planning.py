"""Pure helpers that turn a frame range into chunks and name what comes out; no I/O, table-tested."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_frame_range(text: str) -> tuple[int, int]:
    """'1-48' → (1, 48); '7' → (7, 7). Raises ValueError for anything else, including a reversed range."""
    match = _RANGE.match(text)
    if not match:
        raise ValueError(f"frame range must look like 1-48 or 7, got {text!r}")
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) is not None else start
    if end < start:
        raise ValueError(f"frame range ends ({end}) before it starts ({start})")
    return start, end


def plan_chunks(frame_start: int, frame_end: int, chunk_size: int) -> list[tuple[int, int]]:
    """Split an inclusive range into consecutive chunks of at most `chunk_size` frames."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    if frame_end < frame_start:
        raise ValueError("frame_end is before frame_start")
    return [(s, min(s + chunk_size - 1, frame_end)) for s in range(frame_start, frame_end + 1, chunk_size)]


def adaptive_chunks(
    frame_start: int, frame_end: int, *, frame_seconds: float, slots: int, target_seconds: float, max_chunks: int
) -> list[tuple[int, int]]:
    """Chunks that each last about `target_seconds` at the measured pace, and near the end hold at most a
    `slots`-th of the frames left (guided self-scheduling), so no slot idles while another renders a long tail.
    Never more than `max_chunks`: past that, equal chunks as few as that (the farm's choice is never refused)."""
    if frame_end < frame_start:
        raise ValueError("frame_end is before frame_start")
    longest = max(1, math.floor(target_seconds / max(frame_seconds, 1e-3)))
    chunks, start = [], frame_start
    while start <= frame_end:
        left = frame_end - start + 1
        size = min(longest, max(1, math.ceil(left / max(1, slots))))
        chunks.append((start, start + size - 1))
        start += size
    if len(chunks) > max_chunks:
        return plan_chunks(frame_start, frame_end, math.ceil((frame_end - frame_start + 1) / max_chunks))
    return chunks


def frame_filename(frame: int, ext: str, last_frame: int) -> str:
    """`0007.png`; wider than four digits only when the job's last frame needs it, so names sort as numbers."""
    width = max(4, len(str(last_frame)))
    return f"{frame:0{width}d}.{ext}"


def frame_key(job_id: str, frame: int, ext: str, last_frame: int, sha256: str) -> str:
    """Content-addressed, so two renderers of one frame can never overwrite each other's bytes."""
    stem = frame_filename(frame, ext, last_frame).rsplit(".", 1)[0]
    return f"jobs/{job_id}/frames/{stem}-{sha256[:16]}.{ext}"


def zip_filename(name: str, frame_start: int, frame_end: int) -> str:
    return f"{safe_name(name)}-{frame_start:04d}-{frame_end:04d}.zip"


def movie_filename(name: str, frame_start: int, frame_end: int) -> str:
    return f"{safe_name(name)}-{frame_start:04d}-{frame_end:04d}.mp4"


def safe_name(name: str) -> str:
    """A job name as a file name: path separators and control characters become '_'."""
    cleaned = re.sub(r"[\x00-\x1f/\\:*?\"<>|]", "_", name).strip(" .")
    return cleaned or "render"


def eta_seconds(
    queued_frames: float, in_flight: Sequence[tuple[float, float | None]], average_ms: float | None
) -> float | None:
    """Seconds until the job's last frame is rendered. `in_flight`: per rendering chunk, the frames it has left (less
    the part of its current frame Blender has rendered) and the pace (ms a frame) its worker has shown on this job,
    None if it has shown none yet (the job's average stands in). The frames left are shared by those slots at their
    own rates, so a fast worker counts for more than a slow one; no chunk ends sooner than its own worker finishes
    it. With nothing rendering, one slot at the job's average pace; None when no pace is known at all."""
    left = queued_frames + sum(frames for frames, _ in in_flight)
    if left <= 0:
        return 0.0
    slots = [(frames, ms or average_ms) for frames, ms in in_flight] or [(0.0, average_ms)]
    paced = [(frames, ms) for frames, ms in slots if ms]
    if not paced:
        return None
    rate = sum(1000 / ms for _, ms in paced)  # frames a second, all slots together
    longest_chunk = max(frames * ms / 1000 for frames, ms in paced)
    return round(max(left / rate, longest_chunk), 1)


EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "OPEN_EXR": "exr"}
CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "exr": "image/x-exr"}
