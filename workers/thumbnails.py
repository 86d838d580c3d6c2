"""Thumbnails for the job page's frame grid, made by the worker right after it stores a frame: it has the image
on local disk already, so the web app never decodes full frames and a grid of 1,000 frames stays light."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from farm.previews import THUMBNAIL_BOX, THUMBNAIL_TYPE, thumbnail_key
from farm.retrying import with_retries
from farm.storage import Storage

log = logging.getLogger(__name__)
BACKDROP = (34, 34, 38)  # transparent pixels are shown over the page's own dark tile colour


def make_thumbnail(path: Path) -> bytes | None:
    """A small JPEG of the image, or None for a format Pillow cannot read (OpenEXR)."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", THUMBNAIL_BOX)  # JPEG decodes at a reduced size directly
            image.thumbnail(THUMBNAIL_BOX)
            rgba = image.convert("RGBA")
    except (UnidentifiedImageError, OSError) as exc:
        log.info("no thumbnail for %s: %s", path.name, exc)
        return None
    flat = Image.new("RGB", rgba.size, BACKDROP)
    flat.paste(rgba, mask=rgba.getchannel("A"))
    out = io.BytesIO()
    flat.save(out, "JPEG", quality=82, optimize=True)
    return out.getvalue()


def store_thumbnail(storage: Storage, image_key: str, path: Path) -> None:
    """Store the thumbnail of the frame stored at `image_key` (before the frame is recorded DONE, so a page that
    sees the frame finds its thumbnail); storage outages are waited out like the frame's own upload."""
    data = make_thumbnail(path)
    if data is None:
        return
    key = thumbnail_key(image_key)
    with_retries(
        lambda: storage.exists(key) or storage.put_bytes(key, data, THUMBNAIL_TYPE), what="storing a thumbnail"
    )
