"""Thumbnails for the job page's frame grid, made where the frame was rendered (the worker, or the submission's
probe) while the image is on local disk, so the web app never decodes full frames and a grid of 1,000 frames stays
light. A thumbnail lives beside its frame, named from the frame's own content-addressed key, so no column records
it and the web app finds it without asking who made it.

Also the one place frames become viewable 8-bit pictures for the preview movie (`viewable`): PNG and JPEG through
Pillow, OpenEXR (scene-linear floats, which Pillow cannot read) through FFmpeg's decoder, tone-mapped.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import IO

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from farm.retrying import with_retries
from farm.storage import Storage

log = logging.getLogger(__name__)

THUMBNAIL_BOX = (320, 320)  # the thumbnail fits inside this, keeping the frame's aspect ratio
THUMBNAIL_TYPE = "image/jpeg"
PREVIEWABLE = frozenset({"PNG", "JPEG"})  # output formats Pillow reads; OPEN_EXR frames get no thumbnail
BACKDROP = (34, 34, 38)  # transparent pixels are shown over the page's own dark tile colour
EXR_WHITE = 4.0  # scene-linear value that tone-maps to full white; brighter highlights roll off instead of clipping


def thumbnail_key(image_key: str) -> str:
    """`jobs/J/frames/0007-ab12….png` → `jobs/J/thumbnails/0007-ab12….jpg`."""
    folder, _, name = image_key.rpartition("/frames/")
    return f"{folder}/thumbnails/{name.rsplit('.', 1)[0]}.jpg"


def make_thumbnail(path: Path) -> bytes | None:
    """A small JPEG of the image, or None for a format Pillow cannot read (OpenEXR) or an image it will not
    decode: one above Image.MAX_IMAGE_PIXELS twice over (DecompressionBombError), or a broken one. A thumbnail is a
    convenience; it must never cost the frame it shows."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", THUMBNAIL_BOX)  # JPEG decodes at a reduced size directly
            image.thumbnail(THUMBNAIL_BOX)
            rgba = image.convert("RGBA")
    except UnidentifiedImageError as exc:  # expected: every OpenEXR frame
        log.info("no thumbnail for %s: %s", path.name, exc)
        return None
    except Exception as exc:
        log.warning("no thumbnail for %s: %s: %s", path.name, type(exc).__name__, exc)
        return None
    flat = flatten(rgba)
    out = io.BytesIO()
    flat.save(out, "JPEG", quality=82, optimize=True)
    return out.getvalue()


def flatten(rgba: Image.Image) -> Image.Image:
    """RGB, with transparent pixels over BACKDROP."""
    flat = Image.new("RGB", rgba.size, BACKDROP)
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


def tone_map(linear: np.ndarray) -> np.ndarray:
    """Scene-linear RGB floats → 8-bit sRGB: extended Reinhard per channel (EXR_WHITE maps to 1, so highlights
    roll off), then the sRGB transfer curve. NaN and negative values (which a renderer can write) count as 0."""
    x = np.nan_to_num(linear.astype(np.float32, copy=False), nan=0.0, posinf=EXR_WHITE, neginf=0.0).clip(0, None)
    x = (x * (1 + x / EXR_WHITE**2) / (1 + x)).clip(0, 1)
    srgb = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return (srgb * 255 + 0.5).astype(np.uint8)


def viewable(src: IO[bytes], output_format: str) -> Image.Image:
    """The frame as an RGB picture people look at. Raises ValueError when it cannot be decoded."""
    if output_format == "OPEN_EXR":
        try:
            with av.open(src, format="exr_pipe") as container:
                frame = next(container.decode(video=0))
                return Image.fromarray(tone_map(frame.to_ndarray(format="gbrpf32le")), "RGB")
        except (av.FFmpegError, StopIteration) as exc:
            raise ValueError(f"not a readable OpenEXR image: {exc}") from None
    try:
        with Image.open(src) as image:
            return flatten(image.convert("RGBA"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a readable image: {exc}") from None


def store_thumbnail(storage: Storage, image_key: str, path: Path) -> None:
    """Store the thumbnail of the frame stored at `image_key` (before the frame is recorded DONE, so a page that
    sees the frame finds its thumbnail); storage outages are waited out like the frame's own upload."""
    data = make_thumbnail(path)
    if data is None:
        return
    key = thumbnail_key(image_key)
    with_retries(lambda: storage.put_bytes(key, data, THUMBNAIL_TYPE), what="storing a thumbnail")
