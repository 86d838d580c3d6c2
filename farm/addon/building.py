"""Write the add-on's zip: the add-on (farm/addon/farm_submit) and, under `vendor/`, the farm's modules it runs with
and blender-asset-tracer, so a Blender with nothing installed submits exactly as `farm submit` does.

The farm's modules are copied as they are, never rewritten: `farm/projects/` goes without its `__init__.py` (which
imports the storage layer and the farm's settings, with python-dotenv) and so is a namespace package there. One
top-level folder, `farm_submit/`, holds everything, which both installers take: Blender 4.2+'s extensions
(blender_manifest.toml) and the legacy add-on installer (bl_info). Entries are sorted and dated 1980-01-01, so the
same sources give the same zip.
"""

from __future__ import annotations

import importlib.util
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

ADDON = Path(__file__).parent / "farm_submit"
FARM = Path(__file__).parents[1]
MODULE = "farm_submit"
ZIP_NAME = f"{MODULE}.zip"
# The farm's modules the add-on imports, and what they import in turn (stdlib, requests and BAT aside).
SHIPPED = (
    "__init__.py",
    "hashing.py",
    "cli/__init__.py",
    "cli/client.py",
    "projects/packing.py",
    "projects/sending.py",
    "addon/__init__.py",
    "addon/submitting.py",
)
BAT = "blender_asset_tracer"


def contents() -> Iterator[tuple[str, Path]]:
    """Each file of the zip: its name there and where it comes from."""
    for name in ("__init__.py", "blender_manifest.toml"):
        yield f"{MODULE}/{name}", ADDON / name
    for rel in SHIPPED:
        yield f"{MODULE}/vendor/farm/{rel}", FARM / rel
    spec = importlib.util.find_spec(BAT)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"{BAT} is not installed here (pip install -e .)")
    bat = Path(spec.origin).parent
    for path in sorted(bat.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            yield f"{MODULE}/vendor/{BAT}/{path.relative_to(bat).as_posix()}", path
    for licence in sorted(bat.parent.glob(f"{BAT}-*.dist-info/licenses/*")):
        yield f"{MODULE}/vendor/{BAT}-{licence.name}", licence


def write_zip(out_dir: Path) -> Path:
    """Write `out_dir/farm_submit.zip` (replacing it whole, never leaving half a zip) and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / ZIP_NAME
    part = target.with_name(f".{ZIP_NAME}.part")
    with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, source in sorted(contents()):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, source.read_bytes())
    os.replace(part, target)
    return target
