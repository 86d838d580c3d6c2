"""The Blender add-on end to end: `farm addon` writes the zip; a fresh Blender (the bpy module, its own HOME) installs
it as an extension, then another as a legacy add-on, submits the open file with unsaved changes to the live farm
(real web + worker processes) and follows the job to COMPLETED, as its panel does."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from farm.blender.launcher import run_script
from tests.helpers import HTTP, get_job, make_user

pytestmark = pytest.mark.slow
IN_BLENDER = Path(__file__).parent / "addon_in_blender.py"


@pytest.fixture(scope="module")
def addon_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("addon")
    done = subprocess.run(
        [sys.executable, "-m", "farm", "addon", "-o", str(out)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out / "farm_submit.zip")
    return out / "farm_submit.zip"


def project(folder: Path, tiny_blend: Path) -> Path:
    """A saved .blend and, beside it, a plain green texture it will name relatively once changed in Blender."""
    (folder / "tex").mkdir(parents=True)
    shutil.copy(tiny_blend, folder / "shot.blend")
    Image.new("RGB", (8, 8), (0, 255, 0)).save(folder / "tex" / "green.png")
    return folder / "shot.blend"


def run_addon(prod_settings, addon_zip: Path, url: str, blend: Path, mode: str, frames: tuple[int, int]):  # type: ignore[no-untyped-def]
    """The add-on in Blender, signed in as a new artist; its events, and the artist's name."""
    artist, token = make_user(prod_settings, "artist")
    config = {
        "zip": str(addon_zip),
        "mode": mode,
        "url": url,
        "token": token,
        "blend": str(blend),
        "texture": str(blend.parent / "tex" / "green.png"),
        "frames": list(frames),
    }
    events = run_script(prod_settings, IN_BLENDER, [json.dumps(config)], timeout=360)
    return {e["event"]: e for e in events}, [e for e in events if e["event"] == "status"], artist


def test_addon_installs_submits_unsaved_changes_and_follows_the_job(
    farm, prod_settings, addon_zip, tiny_blend, tmp_path
):
    blend = project(tmp_path, tiny_blend)
    saved = hashlib.sha256(blend.read_bytes()).hexdigest()
    runs = {}
    for mode, frames in (("extension", (1, 2)), ("legacy", (2, 3))):
        events, statuses, artist = run_addon(prod_settings, addon_zip, farm.url, blend, mode, frames)
        runs[mode] = events
        installed, submitted, followed = events["installed"], events["submitted"], events["followed"]

        # The farm's own code came from the zip, without the storage layer (boto3) Blender does not have.
        home = Path(installed["addon"]).parent
        for name in ("sending", "packing", "bat"):
            assert Path(installed[name]).is_relative_to(home / "vendor"), installed
        assert not installed["boto3"]
        assert installed["module"] == {"extension": "bl_ext.user_default.farm_submit", "legacy": "farm_submit"}[mode]

        assert submitted["result"] == ["FINISHED"] and submitted["error"] == "", submitted
        assert submitted["open_file"] == str(blend)  # the open file was not renamed by saving the copy
        assert followed["text"].startswith("Completed") and followed["progress"] == 1.0, (followed, statuses)
        assert followed["job_id"] == submitted["job_id"] and not followed["error"]

        job = get_job(farm.url, submitted["job_id"])
        assert job["status"] == "COMPLETED" and job["name"] == "shot" and job["warnings"] == [], job
        assert job["owner"] == artist  # the add-on's token is the artist's own
        assert (job["render"]["frame_start"], job["render"]["frame_end"]) == frames
        assert job["settings"]["chunk_size"] == 1
        frame = HTTP.get(f"{farm.url}/api/jobs/{job['id']}/frames/{frames[0]}", timeout=30)
        with Image.open(io.BytesIO(frame.content)) as image:
            assert image.size == (48, 32)  # the unsaved resolution
            r, g, b = image.convert("RGB").getpixel((0, 0))  # the sky: the green texture, uploaded (missing: magenta)
            assert g > r + 50 and g > b + 50, (r, g, b)  # AgX desaturates: about (110, 197, 81)
        page = HTTP.get(followed["page"], timeout=30)
        assert followed["page"] == f"{farm.url}/jobs/{job['id']}" and page.status_code == 200 and job["id"] in page.text
        assert events["disabled"] == {"event": "disabled", "enabled": False, "properties": [], "operators": []}

    # Only what the farm lacked went up: the changed .blend and the texture, then the texture no more.
    assert runs["extension"]["submitted"]["uploaded"].startswith("uploaded 2 of 2 files")
    assert runs["legacy"]["submitted"]["uploaded"].startswith("uploaded 1 of 2 files")
    # The artist's file is untouched and the copy saved for the farm is gone.
    assert hashlib.sha256(blend.read_bytes()).hexdigest() == saved
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "shot.blend",
        "tex",
        "tex/green.png",
    ]
