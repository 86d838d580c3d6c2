"""Real studio projects: every file a .blend uses is traced at submission (found, missing, outside the project), a
missing one is a `missing_file` warning or, with strict=1, a refusal; project files are uploaded by content
(check, PUT, manifest); the farm renders a project pixel for pixel as plain Blender renders it in place."""

import dataclasses
import gzip
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import zstandard

from farm.blender.launcher import run_script
from farm.projects import packing
from farm.projects.dependencies import FOUND, MISSING, OUTSIDE, check
from tests.helpers import HTTP, farm_frames, plain_blender_frames, wait_for_status

PROJECT_FILES = Path(__file__).parent.parent / "project_files.py"
FONTS = sorted(Path("/usr/share/fonts").rglob("*.ttf"), key=lambda f: f.stat().st_size)  # smallest first
MISSING_TEXTURE = "//../textures/missing.png"


@pytest.fixture(scope="module")
def project(prod_settings, tmp_path_factory):  # type: ignore[no-untyped-def]
    """tests/project_files.py's project (ROOT/shots/main.blend and its files) and the folder outside it."""
    font = next((f for f in FONTS if f.is_file()), None)
    if font is None:
        pytest.skip("no TrueType font on this machine to put in the project")
    base = tmp_path_factory.mktemp("project")
    root, outside = base / "root", base / "outside"
    outside.mkdir()
    run_script(prod_settings, PROJECT_FILES, [str(root), str(outside), str(font)], timeout=300)
    for backup in root.rglob("*.blend1"):
        backup.unlink()
    return root, outside


def manifest_of(root: Path, main: str = "shots/main.blend") -> tuple[dict, dict[str, Path]]:
    files, paths = {}, {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        files[path.relative_to(root).as_posix()] = {"sha256": sha, "size": len(data)}
        paths[sha] = path
    return {"main": main, "files": files}, paths


def upload_all(client, paths: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    for sha, path in paths.items():
        assert client.put(f"/api/files/{sha}", data=path.read_bytes()).status_code in (200, 201)


def test_dependencies_are_classified_by_path_against_the_project():
    root = "/p"
    files = {"a.png", "udim/t.1001.png", "seq/f_0001.png", "seq/f_0002.png", "seq/g_0001.png", "bake/x/1.bphys"}
    reported = [
        {"kind": "image", "path": "//a.png", "abs": "/p/a.png", "form": "file"},
        {"kind": "image", "path": "//b.png", "abs": "/p/b.png", "form": "file"},
        {
            "kind": "image",
            "path": "//udim/t.<UDIM>.png",
            "abs": "/p/udim/t.<UDIM>.png",
            "form": "tiles",
            "tiles": [1001],
        },
        {"kind": "image", "path": "//u2", "abs": "/p/udim/t.<UDIM>.png", "form": "tiles", "tiles": [1001, 1002]},
        {"kind": "image", "path": "//seq/f_0001.png", "abs": "/p/seq/f_0001.png", "form": "sequence"},
        {"kind": "bake", "path": "//bake", "abs": "/p/bake", "form": "folder"},
        {"kind": "point_cache", "path": "//cache", "abs": "/p/cache", "form": "folder"},
        {"kind": "image", "path": "/etc/passwd", "abs": "/etc/passwd", "form": "file"},
        {"kind": "font", "path": "C:\\fonts\\a.ttf", "abs": "C:/fonts/a.ttf", "form": "file"},
        {"kind": "library", "path": "//../x.blend", "abs": "/x.blend", "form": "file"},
    ]
    found = {(d.kind, d.path): d for d in check(reported, root, files)}
    status = {key: d.status for key, d in found.items()}
    # the second UDIM entry resolves to the same path as the first: one entry per distinct file
    assert status == {
        ("image", "//a.png"): FOUND,
        ("image", "//b.png"): MISSING,
        ("image", "//udim/t.<UDIM>.png"): FOUND,
        ("image", "//seq/f_0001.png"): FOUND,
        ("bake", "//bake"): FOUND,
        ("point_cache", "//cache"): MISSING,
        ("image", "/etc/passwd"): OUTSIDE,
        ("font", "C:\\fonts\\a.ttf"): OUTSIDE,
        ("library", "//../x.blend"): OUTSIDE,
    }
    assert found[("image", "//seq/f_0001.png")].files == ("seq/f_0001.png", "seq/f_0002.png")
    assert found[("bake", "//bake")].files == ("bake/x/1.bphys",)


def test_project_files_are_uploaded_by_content(client):
    data = b"a texture" * 1000
    sha = hashlib.sha256(data).hexdigest()
    blob = {"sha256": sha, "size": len(data)}
    assert client.post("/api/files/check", json={"files": [blob]}).get_json() == {"missing": [blob]}
    wrong = client.put(f"/api/files/{sha}", data=data + b"!")
    assert wrong.status_code == 422 and wrong.get_json()["error"]["code"] == "checksum_mismatch"
    assert client.post("/api/files/check", json={"files": [blob]}).get_json() == {"missing": [blob]}
    assert client.put(f"/api/files/{sha}", data=data).status_code == 201
    assert client.put(f"/api/files/{sha}", data=data).status_code == 200
    assert client.post("/api/files/check", json={"files": [blob]}).get_json() == {"missing": []}
    bad = client.post("/api/files/check", json={"files": [{"sha256": "xyz", "size": 1}]})
    assert bad.status_code == 400 and bad.get_json()["error"]["field"] == "files"


def test_a_manifest_naming_files_not_uploaded_is_refused(client):
    ghost = {"sha256": "ab" * 32, "size": 10}
    manifest = {"main": "a.blend", "files": {"a.blend": ghost}}
    response = client.post("/api/jobs", data={"manifest": json.dumps(manifest)})
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "missing_blobs" and error["missing"] == [ghost]
    escape = {"main": "a.blend", "files": {"a.blend": ghost, "../etc/x": ghost}}
    response = client.post("/api/jobs", data={"manifest": json.dumps(escape)})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "bad_path"


def test_every_missing_dependency_is_named_and_strict_refuses(client, project):
    root, outside = project
    manifest, paths = manifest_of(root)
    upload_all(client, paths)
    fields = {"manifest": json.dumps(manifest), "chunk_size": "1", "frame_start": "1", "frame_end": "1"}
    refused = client.post("/api/jobs", data=dict(fields, strict="1"))
    assert refused.status_code == 422, refused.get_json()
    error = refused.get_json()["error"]
    assert error["code"] == "missing_files" and error["field"] == "strict"
    named = {w["path"] for w in error["files"]}
    assert named == {MISSING_TEXTURE, str(outside / "outside.png")}
    response = client.post("/api/jobs", data=fields)
    assert response.status_code == 201, response.get_json()
    warnings = response.get_json()["job"]["warnings"]
    assert {w["path"] for w in warnings} == named
    assert {w["code"] for w in warnings} == {"missing_file"}
    assert any("outside the uploaded project" in w["message"] for w in warnings)


def test_the_new_job_form_lists_found_and_missing_files(app, client, project, tmp_path, monkeypatch):
    root, _ = project
    roomy = dataclasses.replace(app.extensions["farm"], max_zip_bytes=2**26)  # the project unpacks to over 1 MiB
    monkeypatch.setitem(app.extensions, "farm", roomy)
    archive = tmp_path / "project.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in root.rglob("*"):
            if path.is_file():
                zf.write(path, path.relative_to(root).as_posix())
    with client.session_transaction() as session:
        session["csrf_token"] = "t"
    with open(archive, "rb") as fh:
        response = client.post(
            "/jobs/new/upload", data={"file": (fh, "project.zip"), "main": "shots/main.blend", "csrf_token": "t"}
        )
    assert response.status_code == 200, response.get_data(as_text=True)
    found = response.get_json()["scene"]["dependencies"]
    status = {f["path"]: f["status"] for f in found["files"]}
    assert status[MISSING_TEXTURE] == MISSING
    assert status["//maps/near.png"] == status["//../textures/udim/tile.<UDIM>.png"] == FOUND
    assert status["//../libs/set.blend"] == status["//../libs/props/prop.blend"] == FOUND
    assert status["//../fonts/font.ttf"] == status["//../cache/anim.abc"] == status["//../seq/frame_0001.png"] == FOUND
    assert (found["found"], found["missing"], found["outside"]) == (9, 1, 1)


@pytest.fixture()
def without_outside(project):  # type: ignore[no-untyped-def]
    """The project's absolute path outside it, gone for one test (the worker here shares this machine's disk)."""
    hidden = project[1] / "outside.png"
    kept = hidden.read_bytes()
    hidden.unlink()
    yield
    hidden.write_bytes(kept)


@pytest.mark.usefixtures("without_outside")
def test_a_project_renders_as_plain_blender_renders_it_in_place(own_farm, prod_settings, project, tmp_path):
    """Uploaded by content (every file PUT once, a second job uploads nothing) and rendered by a worker from its
    job's own project folder, removed once the job is done. The file outside the project is not uploaded, and not
    on this machine for the test's length, so neither the farm nor plain Blender has it."""
    root, _ = project
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    manifest, paths = manifest_of(copy)
    cache = tmp_path / "worker-cache"
    own_farm.start_worker("w", {"FARM_CACHE_DIR": str(cache)})
    api = own_farm.url + "/api"
    wanted = list(manifest["files"].values())
    missing = HTTP.post(f"{api}/files/check", json={"files": wanted}, timeout=30).json()["missing"]
    for blob in missing:
        assert HTTP.put(f"{api}/files/{blob['sha256']}", data=paths[blob["sha256"]].read_bytes(), timeout=60).ok
    job_id = HTTP.post(
        f"{api}/jobs",
        data={"manifest": json.dumps(manifest), "frame_start": 1, "frame_end": 3, "chunk_size": 1},
        timeout=120,
    ).json()["job"]["id"]
    job = wait_for_status(own_farm.url, job_id, {"COMPLETED", "FAILED"}, timeout=240)
    assert job["status"] == "COMPLETED", job
    plain = plain_blender_frames(prod_settings, copy / "shots" / "main.blend", tmp_path / "plain", 1, 3)
    assert len({image for _, _, image in plain.values()}) == 3  # the sequence and the Alembic cube move
    assert farm_frames(own_farm.url, job_id) == plain
    assert HTTP.post(f"{api}/files/check", json={"files": wanted}, timeout=30).json() == {"missing": []}
    logs = [HTTP.get(f"{api}/jobs/{job_id}/chunks/{i}/log", timeout=30).text for i in range(3)]
    assert "<project>/shots/main.blend" in logs[0]  # the project folder's random name keeps other jobs out
    assert not any("projects/job-" in text for text in logs)  # so no log shows it
    assert all('"warm": true' in text for text in logs[1:])  # one path for the whole job: the file stayed loaded
    assert not any((cache / "projects").iterdir())  # the job's folder went with its Blender
    assert len(list((cache / "blobs").iterdir())) == len(paths)  # every file once, linked, not copied per job


def farm_submit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "farm", "submit", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_packing_lists_each_file_once_and_repoints_what_is_outside(project, tmp_path):
    """BAT's ZipPacker writes the first frame of an image sequence twice; the packed project names each file once."""
    root, outside = project
    packed = packing.pack(root / "shots" / "main.blend", tmp_path)
    assert packed.root == root and packed.main == "shots/main.blend"
    assert sorted(f for f in packed.files if f.startswith("seq/")) == [f"seq/frame_{i:04d}.png" for i in (1, 2, 3)]
    assert {"textures/udim/tile.1001.png", "textures/udim/tile.1002.png", "libs/props/prop.blend"} <= set(packed.files)
    assert packed.repointed == [f"_outside_project{outside}/outside.png"]
    assert packed.missing == [str(root / "textures" / "missing.png")]
    assert (root / "shots" / "main.blend").read_bytes() != packed.files["shots/main.blend"].read_bytes()  # a copy


def test_farm_submit_sends_what_the_blend_uses_and_then_only_what_changed(own_farm, prod_settings, project, tmp_path):
    root, _ = project
    work = tmp_path / "root"
    shutil.copytree(root, work)
    blend = work / "shots" / "main.blend"
    dry = farm_submit(own_farm.env, str(blend), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "seq/frame_0002.png" in dry.stdout and f"missing: {work}/textures/missing.png" in dry.stdout
    assert "uploaded" not in dry.stdout
    strict = farm_submit(own_farm.env, str(blend), "--strict", "--frames", "1-1", "--chunk-size", "1")
    assert strict.returncode != 0 and "missing_files" in strict.stderr
    own_farm.start_worker("w")
    first = farm_submit(own_farm.env, str(blend), "--frames", "1-3", "--chunk-size", "1", "--wait")
    assert first.returncode == 0, first.stderr
    assert re.search(r"^uploaded \d+ of 14 files", first.stdout, re.M), first.stdout
    assert "missing.png" in first.stderr  # the farm's own warning, printed
    lines = first.stdout.splitlines()
    job_id = lines[next(i for i, line in enumerate(lines) if line.startswith("uploaded ")) + 1].split()[0]
    plain = plain_blender_frames(prod_settings, blend, tmp_path / "plain", 1, 3)
    assert farm_frames(own_farm.url, job_id) == plain  # the outside texture too, re-pointed in the copy
    write_png_like = (work / "textures" / "wall.png").read_bytes()
    (work / "textures" / "wall.png").write_bytes(write_png_like + b"\0")  # one file changed (a trailing byte)
    again = farm_submit(own_farm.env, str(blend), "--frames", "1-1", "--chunk-size", "1")
    assert again.returncode == 0, again.stderr
    assert f"uploaded 1 of 14 files ({len(write_png_like) + 1} bytes)" in again.stdout


def test_compressed_blend_files_are_sent_and_render_as_plain_blender(own_farm, prod_settings, tiny_blend, tmp_path):
    """zstd (Blender ≥ 3.0) and gzip (older Blenders) wrap a .blend; both the artist's tracer and the farm read them."""
    own_farm.start_worker("w")
    zstd = tiny_blend.read_bytes()  # the demo scene is saved compressed, as Blender ≥ 3.0 does
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(zstd), read_across_frames=True).read()
    assert zstd.startswith(b"\x28\xb5\x2f\xfd") and raw.startswith(b"BLENDER")
    for name, packed in (("zstd", zstd), ("gzip", gzip.compress(raw))):
        blend = tmp_path / name / "scene.blend"
        blend.parent.mkdir()
        blend.write_bytes(packed)
        sent = farm_submit(own_farm.env, str(blend), "--frames", "1-2", "--chunk-size", "2", "--name", name, "--wait")
        assert sent.returncode == 0, sent.stderr
        lines = sent.stdout.splitlines()
        job_id = lines[next(i for i, line in enumerate(lines) if line.startswith("uploaded ")) + 1].split()[0]
        plain = plain_blender_frames(prod_settings, blend, tmp_path / name / "plain", 1, 2)
        assert farm_frames(own_farm.url, job_id) == plain
