"""Where a frame's thumbnail lives: beside the frame, named from the frame's own content-addressed key, so no
column records it and the web app finds it without asking the worker that made it."""

from __future__ import annotations

THUMBNAIL_BOX = (320, 320)  # the thumbnail fits inside this, keeping the frame's aspect ratio
THUMBNAIL_TYPE = "image/jpeg"
PREVIEWABLE = frozenset({"PNG", "JPEG"})  # output formats Pillow reads; OPEN_EXR frames get no thumbnail


def thumbnail_key(image_key: str) -> str:
    """`jobs/J/frames/0007-ab12….png` → `jobs/J/thumbnails/0007-ab12….jpg`."""
    folder, _, name = image_key.rpartition("/frames/")
    return f"{folder}/thumbnails/{name.rsplit('.', 1)[0]}.jpg"
