"""POST /api/jobs and friends through the Flask test client: every bad input answers the contract's JSON error
naming its field; good input answers 201 with the JOB shape. Blender really probes every file."""

import hashlib
import io
import zipfile

import pytest
from werkzeug.test import EnvironBuilder

from farm.jobs import states
from farm.models import Job, JobStatus
from tests.helpers import HTTP, build_blend

PNG = b"\x89PNG\r\n\x1a\n" + bytes(100)


def post(client, data=None, file=None, filename="scene.blend"):
    form = dict(data or {})
    if file is not None:
        form["file"] = (io.BytesIO(file), filename)
    environ = EnvironBuilder(
        path="/api/jobs", method="POST", data=form, content_type="multipart/form-data"
    ).get_environ()
    try:
        return client.open(environ)
    finally:
        environ["wsgi.input"].close()  # large bodies are spooled to a temp file the test client leaves open


def assert_error(response, status, code, field):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert (error["code"], error["field"]) == (code, field), error
    assert error["message"]
    assert "Traceback" not in response.get_data(as_text=True)
    return error


def zip_bytes(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def camera_less_blend(prod_settings, tmp_path_factory):
    return build_blend(prod_settings, "no_camera", tmp_path_factory.mktemp("nocam") / "nocam.blend").read_bytes()


def test_submit_answers_201_with_the_job(client, blend_bytes):
    response = post(client, {"name": "cubes", "frame_start": "0", "frame_end": "3", "chunk_size": "2"}, blend_bytes)
    assert response.status_code == 201, response.get_data(as_text=True)
    job = response.get_json()["job"]
    assert response.headers["Location"].endswith(f"/api/jobs/{job['id']}")
    assert job["name"] == "cubes" and job["status"] == "QUEUED" and job["worker_host"] is None
    assert job["created_at"].endswith("Z") and job["asset"] is None
    assert job["render"] == {
        "frame_start": 0,
        "frame_end": 3,
        "frames_to_render": 4,
        "frames_rendered": 0,
        "latest_frame_rendered": None,
        "average_render_time": None,
        "eta_seconds": None,
        "progress": 0.0,
        "chunks_rendering": 0,
    }
    chunks = client.get(f"/api/jobs/{job['id']}/chunks").get_json()["chunks"]
    assert [(c["frame_start"], c["frame_end"], c["status"]) for c in chunks] == [(0, 1, "QUEUED"), (2, 3, "QUEUED")]
    assert client.get(f"/api/jobs/{job['id']}").get_json()["job"]["id"] == job["id"]
    assert client.post(f"/api/jobs/{job['id']}/cancel").get_json()["job"]["status"] == "CANCELED"


def test_defaults_come_from_the_scene(client, blend_bytes):
    response = post(client, {}, blend_bytes, filename="my shot.blend")
    assert response.status_code == 201, response.get_data(as_text=True)
    job = response.get_json()["job"]
    assert job["name"] == "my shot"
    assert (job["render"]["frame_start"], job["render"]["frame_end"]) == (1, 6)  # the scene's own range
    assert job["settings"]["engine"] == "CYCLES" and job["settings"]["samples"] == 4
    assert (job["settings"]["resolution_x"], job["settings"]["resolution_y"]) == (64, 36)
    assert job["settings"]["output_format"] == "PNG" and job["settings"]["device"] == "AUTO"
    assert job["source"]["blender"].startswith("4.5")
    client.post(f"/api/jobs/{job['id']}/cancel")


def test_zip_project_with_main(client, blend_bytes):
    data = zip_bytes({"project/shots/main.blend": blend_bytes, "project/tex/wood.png": PNG})
    response = post(client, {"main": "project/shots/main.blend", "frame_end": "2"}, data, filename="project.zip")
    assert response.status_code == 201, response.get_data(as_text=True)
    job = response.get_json()["job"]
    assert job["source"]["kind"] == "project" and job["source"]["main"] == "project/shots/main.blend"
    member = {"sha256": hashlib.sha256(PNG).hexdigest(), "size": len(PNG)}  # each file of the zip is a blob now
    assert client.post("/api/files/check", json={"files": [member]}).get_json() == {"missing": []}
    client.post(f"/api/jobs/{job['id']}/cancel")


@pytest.mark.parametrize(
    ("data", "code", "field"),
    [
        ({"frame_start": "5", "frame_end": "2"}, "bad_range", "frame_end"),
        ({"frame_start": "-1"}, "negative", "frame_start"),
        ({"frame_end": "-10"}, "negative", "frame_end"),
        ({"frame_start": "abc"}, "not_an_integer", "frame_start"),
        ({"frame_end": "1.5"}, "not_an_integer", "frame_end"),
        ({"chunk_size": "0"}, "too_small", "chunk_size"),
        ({"chunk_size": "-4"}, "negative", "chunk_size"),
        ({"chunk_size": "two"}, "not_an_integer", "chunk_size"),
        ({"frame_start": "0", "frame_end": "1000000"}, "too_many_frames", "frame_end"),
        ({"engine": "POVRAY"}, "unknown_choice", "engine"),
        ({"output_format": "GIF"}, "unknown_choice", "output_format"),
        ({"device": "TPU"}, "unknown_choice", "device"),
        ({"resolution_x": "2"}, "too_small", "resolution_x"),
        ({"resolution_y": "100000"}, "too_large", "resolution_y"),
        ({"resolution_percentage": "0"}, "too_small", "resolution_percentage"),
        ({"resolution_percentage": "101"}, "too_large", "resolution_percentage"),
        ({"samples": "0"}, "too_small", "samples"),
        ({"priority": "10"}, "too_large", "priority"),
        ({"priority": "-1"}, "negative", "priority"),
        ({"name": "x" * 201}, "too_long", "name"),
        ({"name": "bad\x07name"}, "bad_characters", "name"),
        ({"main": "scene.blend"}, "not_a_zip", "main"),
    ],
)
def test_bad_fields_name_the_field(client, blend_bytes, data, code, field):
    assert_error(post(client, data, blend_bytes), 400, code, field)


def test_missing_file(client):
    assert_error(post(client, {"frame_start": "1"}), 400, "missing", "file")


def test_json_body_instead_of_a_form(client):
    response = client.post("/api/jobs", json={"frame_start": 1})
    assert_error(response, 400, "missing", "file")


def test_empty_file(client):
    assert_error(post(client, {}, b""), 400, "empty", "file")


@pytest.mark.parametrize("payload", [PNG, b"hello world", b"BLEND" + bytes(10)])
def test_not_a_blend(client, payload):
    assert_error(post(client, {}, payload), 400, "not_blend", "file")


def test_blend_that_blender_cannot_open(client):
    error = assert_error(post(client, {}, b"BLENDER-v405REND" + b"\xde\xad" * 2000), 400, "unreadable_blend", "file")
    assert "Blender could not open the file" in error["message"]
    assert "scene.blend" in error["message"] and "upload-" not in error["message"]  # the user's name, not ours


def test_scene_without_camera(client, camera_less_blend):
    assert_error(post(client, {}, camera_less_blend), 400, "no_camera", "file")


def test_zip_without_main(client, blend_bytes):
    error = assert_error(post(client, {}, zip_bytes({"a.blend": blend_bytes}), "p.zip"), 400, "missing", "main")
    assert "a.blend" in error["message"]


def test_zip_with_missing_main(client, blend_bytes):
    data = zip_bytes({"a.blend": blend_bytes})
    assert_error(post(client, {"main": "b.blend"}, data, "p.zip"), 400, "not_in_zip", "main")


def test_zip_main_that_is_not_a_blend(client):
    data = zip_bytes({"a.blend": b"not really"})
    assert_error(post(client, {"main": "a.blend"}, data, "p.zip"), 400, "not_blend", "main")


@pytest.mark.parametrize("name", ["../escape.blend", "/abs/scene.blend", "ok/../../x.blend"])
def test_zip_with_path_traversal(client, blend_bytes, name):
    data = zip_bytes({name: blend_bytes})
    assert_error(post(client, {"main": name}, data, "p.zip"), 400, "unsafe_zip", "file")


def test_zip_that_unpacks_to_an_absurd_size(client):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.bin", bytes(3 * 2**20))  # the in-process app allows 1 MiB unpacked
    assert_error(post(client, {"main": "x.blend"}, buffer.getvalue(), "p.zip"), 400, "zip_too_large", "file")


def test_oversize_upload_is_413(client):
    assert_error(post(client, {}, b"BLENDER" + bytes(10 * 2**20)), 413, "too_large", "file")


def test_unknown_job_is_404_json(client):
    for path in ("/api/jobs/nope", "/api/jobs/nope/frames", "/api/jobs/" + "x" * 300, "/api/nothing-here"):
        assert_error(client.get(path), 404, "not_found", None)
    assert_error(client.post("/api/jobs/nope/cancel"), 404, "not_found", None)


def test_wrong_method_is_json(client):
    response = client.delete("/api/jobs")
    assert response.status_code == 405 and response.get_json()["error"]["code"] == "method_not_allowed"


def test_wrong_state_is_409(client, app, blend_bytes):
    job_id = post(client, {"frame_end": "1", "chunk_size": "1"}, blend_bytes).get_json()["job"]["id"]  # no probe frame
    assert_error(client.post(f"/api/jobs/{job_id}/retry"), 409, "wrong_state", None)  # QUEUED, not retryable
    assert_error(client.get(f"/api/jobs/{job_id}/asset"), 409, "wrong_state", None)
    assert_error(client.get(f"/api/jobs/{job_id}/frames/1"), 409, "wrong_state", None)
    from webapp.extensions import db

    with app.app_context():
        for status in (JobStatus.PACKAGING, JobStatus.UPLOADING):
            states.move_job(db.session, job_id, status)
        states.complete_job(db.session, job_id, asset_key="k", asset_filename="f.zip", asset_size=1, actor="test")
        db.session.commit()
        assert db.session.get(Job, job_id).status == JobStatus.COMPLETED
    assert_error(client.post(f"/api/jobs/{job_id}/cancel"), 409, "wrong_state", None)


@pytest.mark.parametrize(
    ("query", "code", "field"),
    [
        ("status=DONE", "unknown_choice", "status"),
        ("limit=0", "out_of_range", "limit"),
        ("limit=abc", "out_of_range", "limit"),
        ("limit=501", "out_of_range", "limit"),
        ("offset=-1", "out_of_range", "offset"),
    ],
)
def test_list_rejects_bad_queries(client, query, code, field):
    assert_error(client.get(f"/api/jobs?{query}"), 400, code, field)


def test_list_filters_and_searches(client, blend_bytes):
    ids = [
        post(client, {"name": name, "frame_end": "1"}, blend_bytes).get_json()["job"]["id"]
        for name in ("alpha shot", "beta shot", "alpha_50%")
    ]
    client.post(f"/api/jobs/{ids[1]}/cancel")
    found = client.get("/api/jobs?q=alpha").get_json()["jobs"]
    assert {j["id"] for j in found} >= {ids[0], ids[2]} and ids[1] not in {j["id"] for j in found}
    assert [j["id"] for j in client.get("/api/jobs?q=50%25").get_json()["jobs"]] == [ids[2]]  # % is literal
    canceled = client.get("/api/jobs?status=canceled").get_json()["jobs"]
    assert ids[1] in {j["id"] for j in canceled} and all(j["status"] == "CANCELED" for j in canceled)
    page = client.get("/api/jobs?limit=2&offset=0").get_json()
    assert len(page["jobs"]) == 2 and page["total"] >= 3
    newest_first = [j["created_at"] for j in client.get("/api/jobs?limit=50").get_json()["jobs"]]
    assert newest_first == sorted(newest_first, reverse=True)
    for job_id in (ids[0], ids[2]):
        client.post(f"/api/jobs/{job_id}/cancel")


def fetched(response) -> bytes:  # type: ignore[no-untyped-def]
    """A served file's bytes: from the app, or from S3 when the app redirects to a presigned URL."""
    if response.status_code in (302, 303, 307):
        response = HTTP.get(response.headers["Location"], timeout=10)
        assert response.status_code == 200
        return response.content
    assert response.status_code == 200
    return response.data


def test_an_adaptive_jobs_probe_frame_is_kept_as_its_first_frame(client, blend_bytes):
    response = post(client, {"frame_start": "2", "frame_end": "5"}, blend_bytes)
    assert response.status_code == 201, response.get_data(as_text=True)
    job = response.get_json()["job"]
    assert job["render"]["frames_rendered"] == 1 and job["render"]["latest_frame_rendered"] == 2
    frames = client.get(f"/api/jobs/{job['id']}/frames").get_json()["frames"]
    first, rest = frames[0], frames[1:]
    assert first["frame"] == 2 and first["status"] == "DONE" and first["device"] == "CPU"
    assert first["worker"].startswith("probe@") and first["render_time"] > 0
    image = fetched(client.get(f"/api/jobs/{job['id']}/frames/2"))
    assert image.startswith(b"\x89PNG") and hashlib.sha256(image).hexdigest() == first["sha256"]
    assert fetched(client.get(f"/api/jobs/{job['id']}/frames/2/thumbnail")).startswith(b"\xff\xd8")  # a JPEG
    assert [f["status"] for f in rest] == ["QUEUED"] * 3
    client.post(f"/api/jobs/{job['id']}/cancel")
