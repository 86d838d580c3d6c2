"""The pages through Flask's test client on the real Postgres (and real Blender where a scene is read): CSRF, the
New job form's errors and kept input, zip projects' .blend choice, escaping of user input, the jobs list's search
and pages, the monitor, and thumbnails made by the worker's code."""

from __future__ import annotations

import io
import os
import re
import time
import zipfile
from pathlib import Path

from PIL import Image

from farm.models import Job
from farm.storage.local import FileStorage
from farm.storage.previews import make_thumbnail, store_thumbnail, thumbnail_key
from tests.helpers import csrf_in
from tests.rows import make_job, render_frame


def csrf_token(client) -> str:  # type: ignore[no-untyped-def]
    return csrf_in(client.get("/jobs/new").get_data(as_text=True))


def test_forms_without_this_browsers_csrf_token_are_refused(client):
    assert client.post("/jobs/new", data={"frame_start": "1"}).status_code == 400
    assert client.post("/jobs/new", data={"csrf_token": "forged"}).status_code == 400
    response = client.post("/jobs/new", data={"csrf_token": csrf_token(client)})
    assert response.status_code == 400 and "choose a .blend or .zip file" in response.get_data(as_text=True)


def test_a_bad_range_is_shown_beside_its_field_and_everything_typed_is_kept(client, app, tiny_blend):
    token = csrf_token(client)
    with open(tiny_blend, "rb") as fh:
        response = client.post(
            "/jobs/new",
            data={
                "csrf_token": token,
                "file": (fh, "tiny.blend"),
                "name": "a & b",
                "frame_start": "5",
                "frame_end": "2",
            },
        )
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    field = re.search(r'data-field="frame_end">.*?</div>', page, re.S).group(0)
    assert "frame_end (2) is before frame_start (5)" in field and 'aria-invalid="true"' in field
    assert 'value="5"' in page and 'value="a &amp; b"' in page
    upload = re.search(r'name="upload" id="f-upload" value="([0-9a-f]{32})"', page).group(1)  # the file is kept

    response = client.post(
        "/jobs/new", data={"csrf_token": token, "upload": upload, "name": "a & b", "frame_start": "1", "frame_end": "2"}
    )
    assert response.status_code == 303
    job_id = response.headers["Location"].rsplit("/", 1)[1]
    with app.app_context():
        from webapp.extensions import db

        job = db.session.get(Job, job_id)
        assert (job.name, job.frame_start, job.frame_end) == ("a & b", 1, 2)
    assert client.post("/jobs/new", data={"csrf_token": token, "upload": upload}).status_code == 400  # used up


def test_a_zip_project_offers_its_blend_files_and_each_ones_scene(client, tiny_blend):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(tiny_blend, "shots/a.blend")
        zf.write(tiny_blend, "shots/b.blend")
        zf.writestr("textures/readme.txt", "x")
    token = csrf_token(client)
    staged = client.post(
        "/jobs/new/upload", data={"csrf_token": token, "file": (io.BytesIO(archive.getvalue()), "project.zip")}
    ).get_json()
    assert staged["upload"]["blend_files"] == ["shots/a.blend", "shots/b.blend"] and staged["scene"] is None
    scene = client.post(
        "/jobs/new/scene", data={"csrf_token": token, "upload": staged["upload"]["token"], "main": "shots/b.blend"}
    ).get_json()["scene"]
    assert (scene["frame_start"], scene["frame_end"], scene["resolution_x"]) == (1, 6, 64)
    missing = client.post(
        "/jobs/new/scene", data={"csrf_token": token, "upload": staged["upload"]["token"], "main": "nope.blend"}
    )
    assert missing.status_code == 400 and missing.get_json()["error"]["field"] == "main"
    bad = client.post("/jobs/new/upload", data={"csrf_token": token, "file": (io.BytesIO(b"hello"), "x.blend")})
    assert bad.status_code == 400 and bad.get_json()["error"]["field"] == "file"
    broken = b"BLENDER-v405REND" + b"\xde\xad" * 2000
    unreadable = client.post("/jobs/new/upload", data={"csrf_token": token, "file": (io.BytesIO(broken), "shot.blend")})
    error = unreadable.get_json()["error"]
    assert unreadable.status_code == 400 and error["code"] == "unreadable_blend"
    assert "shot.blend" in error["message"] and "staged" not in error["message"]  # the user's name, not our path


def test_a_probe_folder_left_by_a_killed_process_neither_breaks_uploads_nor_outstays_a_day(client, app):
    """A web process killed while Blender read a staged file leaves its probe-* folder among the staged uploads;
    once it is a day old the next upload's sweep removes it, and a younger one (a probe running now) is kept."""
    folder = app.extensions["farm"].instance_dir / "tmp" / "staged"
    folder.mkdir(parents=True, exist_ok=True)
    day_and_more = time.time() - 25 * 3600
    left, running = folder / "probe-k1ll3d", folder / "probe-running"
    for probe in (left, running):
        (probe / "frames").mkdir(parents=True)
        (probe / "main.blend").write_bytes(b"BLENDER-v405" + bytes(100))
    for path in (left / "main.blend", left / "frames", left):
        os.utime(path, (day_and_more, day_and_more))
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.blend", b"BLENDER-v405")
        zf.writestr("b.blend", b"BLENDER-v405")
    token = csrf_token(client)
    for _ in range(2):  # not only the upload that sweeps it: every later one
        staged = client.post(
            "/jobs/new/upload", data={"csrf_token": token, "file": (io.BytesIO(archive.getvalue()), "project.zip")}
        )
        assert staged.status_code == 200, staged.get_data(as_text=True)[:500]
        assert staged.get_json()["upload"]["blend_files"] == ["a.blend", "b.blend"]
    assert not left.exists() and (running / "main.blend").exists()


def test_job_names_are_escaped_on_every_page(client, database):
    evil = "<script>alert(1)</script>"
    job_id = make_job(database, 3, 3, name=evil)
    for url in ("/", f"/jobs/{job_id}", "/?partial=1"):
        page = client.get(url).get_data(as_text=True)
        assert "<script>alert" not in page, url
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.get(f"/jobs/{job_id}").get_data(as_text=True)


def test_jobs_list_searches_filters_and_pages(client, database):
    for n in range(30):
        make_job(database, 1, 1, name=f"pagetest {n:02d}")
    first = client.get("/?q=pagetest").get_data(as_text=True)
    assert first.count('<tr data-job="') == 25 and "Page 1 of 2 · 30 jobs" in first
    assert first.index("pagetest 29") < first.index("pagetest 05")  # newest first
    second = client.get("/?q=pagetest&page=2").get_data(as_text=True)
    assert second.count('<tr data-job="') == 5 and "pagetest 00" in second
    assert client.get("/?q=pagetest&status=COMPLETED").get_data(as_text=True).count('<tr data-job="') == 0
    for query in ("status=EXPLODED", "page=0"):
        bad = client.get(f"/?{query}")
        assert bad.status_code == 200 and "must be" in bad.get_data(as_text=True), query
    fragment = client.get("/?q=pagetest&partial=1").get_data(as_text=True)
    assert "<html" not in fragment and fragment.count('<tr data-job="') == 25


def test_job_page_embeds_its_job_and_the_monitor_its_data(client, database):
    job_id = make_job(database, 12, 4)
    render_frame(database, job_id, 3, worker="node-7@test")
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert page.count('class="tile queued"') == 12 and 'data-last="12"' in page and "grid tall" not in page
    assert '"frames_rendered":1' in page.replace(" ", "")
    assert '"frames":[]' in page.replace(" ", "")  # frames come from the stream or the API, not in the HTML
    missing = client.get("/jobs/nope")
    assert missing.status_code == 404 and missing.mimetype == "text/html" and "job nope not found" in missing.text

    monitor = client.get("/workers").get_data(as_text=True)
    assert "Queues" in monitor and "Tasks" in monitor
    fragment = client.get("/workers?partial=1&state=FAILURE").get_data(as_text=True)
    assert "<html" not in fragment and "Tasks" in fragment
    shown = re.findall(r'<tr data-task="[^"]+">.*?class="badge s-(\w+)"', fragment, re.S)
    assert set(shown) <= {"failure"} and (shown or "No task in state failure" in fragment)
    assert "state must be one of" in client.get("/workers?state=EXPLODED").get_data(as_text=True)


def test_a_long_jobs_page_carries_only_its_first_tiles(client, database):
    """A 1,000-frame page stays small: 60 tiles in the HTML, a grid of full height, the script adds the rest."""
    page = client.get(f"/jobs/{make_job(database, 1000, 10)}").get_data(as_text=True)
    assert page.count('class="tile queued"') == 60 and 'data-last="1000"' in page and "grid tall" in page
    assert len(page) < 20_000, len(page)


def test_worker_thumbnails_fit_the_box_and_land_beside_the_frame(tmp_path: Path):
    frame = tmp_path / "0001.png"
    Image.new("RGBA", (1920, 1080), (200, 80, 40, 255)).save(frame)
    thumb = Image.open(io.BytesIO(make_thumbnail(frame)))
    assert thumb.format == "JPEG" and thumb.size == (320, 180)
    assert make_thumbnail(tmp_path / "missing.png") is None
    (tmp_path / "frame.exr").write_bytes(b"v/1\x01not really")
    assert make_thumbnail(tmp_path / "frame.exr") is None

    storage = FileStorage(tmp_path / "storage")
    key = "jobs/j1/frames/0001-abcdef.png"
    store_thumbnail(storage, key, frame)
    assert thumbnail_key(key) == "jobs/j1/thumbnails/0001-abcdef.jpg"
    assert storage.read_bytes(thumbnail_key(key))[:3] == b"\xff\xd8\xff"
