"""The preview movie of a job of two frames or more: every frame, in order, as an H.264 MP4 that plays in any
browser, stored beside the zip. Made by the packager once the zip is built, from the same checked frames (this
machine's frame cache first), so a movie never shows bytes the zip does not hold.

H.264 in yuv420p (what browsers decode), CRF 19 (visually close to the frames), padded to even dimensions (yuv420p
halves the chroma planes), at the scene's own frame rate, with the index at the front (`faststart`) so the page
starts playing before the whole file arrives. OpenEXR frames are tone-mapped (farm/storage/previews.py). A movie
is a convenience: one that cannot be made is logged, and the job completes without it.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from PIL import Image

from farm.jobs import planning
from farm.models import Job
from farm.retrying import with_retries
from farm.storage.previews import viewable
from workers.context import WorkerContext
from workers.frame_fetch import done_frames, fetched

log = logging.getLogger(__name__)
CRF = 19
MAX_SIDE = 3840  # larger frames are scaled down: a preview, and what browsers decode in hardware
DEFAULT_FPS = Fraction(24)
MIN_FPS, MAX_FPS = Fraction(1, 1000), Fraction(1000)
CONTENT_TYPE = "video/mp4"


def movie_fps(scene: dict[str, Any]) -> Fraction:
    """The scene's frame rate (fps / fps_base, as the probe read it) as an exact fraction: 24, or 30000/1001 for
    29.97 (Blender keeps fps_base as a 32-bit float, so the quotient is a hair off and is snapped to the whole or
    NTSC rate it means). The file chose it, so it is held to a sane range; a missing or odd value means 24."""
    fps = scene.get("fps")
    if type(fps) not in (int, float) or not MIN_FPS <= fps <= MAX_FPS:
        return DEFAULT_FPS
    for meant in (Fraction(round(fps)), Fraction(round(fps * 1.001) * 1000, 1001)):
        if meant and abs(meant - Fraction(fps)) <= Fraction(fps) / 10**5:
            return meant
    return Fraction(fps).limit_denominator(1001)


def _fit(image: Image.Image, size: tuple[int, int] | None) -> Image.Image:
    """Scale to `size` (the movie's frame, set by its first image) or, for the first, within MAX_SIDE; then pad with
    black to even dimensions."""
    if size is None:
        image.thumbnail((MAX_SIDE, MAX_SIDE))
    elif image.size != size:
        image = image.resize(size)
    width, height = image.size
    if width % 2 == 0 and height % 2 == 0:
        return image
    padded = Image.new("RGB", (width + width % 2, height + height % 2))
    padded.paste(image, (0, 0))
    return padded


def encode(images: Iterable[Image.Image], fps: Fraction, dest: Path) -> int:
    """Write the pictures to `dest` as an MP4; returns how many frames it holds."""
    count = 0
    size: tuple[int, int] | None = None
    with av.open(str(dest), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(CRF), "preset": "medium"}
        stream.codec_context.time_base = 1 / fps
        for image in images:
            if size is None:
                first = _fit(image, None)
                size = first.size
                stream.width, stream.height = size
                picture = first
            else:
                picture = _fit(image, (stream.width, stream.height))
            frame = av.VideoFrame.from_image(picture)
            frame.pts = count
            out.mux(stream.encode(frame))
            count += 1
        out.mux(stream.encode(None))
    return count


def make_movie(ctx: WorkerContext, job: Job) -> tuple[str, str, int] | None:
    """Encode and store the job's movie; (key, filename, size), or None when the job wants none (one frame, or
    `preview_movie=0`) or it could not be made."""
    if not job.preview_movie or job.frames_to_render < 2:
        return None
    filename = planning.movie_filename(job.name, job.frame_start, job.frame_end)
    key = f"jobs/{job.id}/{filename}"
    scratch = ctx.settings.cache_dir / "movies"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="movie-", dir=scratch) as folder:
            dest = Path(folder) / "movie.mp4"

            def pictures() -> Iterable[Image.Image]:
                for _row, src in fetched(ctx, done_frames(ctx, job.id), Path(folder)):
                    yield viewable(src, job.output_format)

            count = encode(pictures(), movie_fps(job.scene), dest)
            size = dest.stat().st_size
            with_retries(lambda: ctx.storage.put_file(key, dest, CONTENT_TYPE), what="storing the movie")
    except Exception as exc:  # never the job's failure: its frames and zip are fine
        log.warning("job %s: no preview movie: %s: %s", job.id, type(exc).__name__, exc)
        return None
    log.info("job %s: movie %s (%d frames, %d bytes)", job.id, key, count, size)
    return key, filename, size
