"""Scripts stay off, and the job says what that changes: the probe counts Python drivers, registered text blocks and
script nodes, and JOB `warnings`, the job page and `farm submit` name them. FARM_TRUSTED_SCRIPTS=1 (an admin's
choice for a farm whose every file is trusted) runs them, with no warning."""

import uuid

import pytest

from tests.helpers import (
    FarmProcesses,
    build_blend,
    farm_frames,
    plain_blender_frames,
    submit,
    wait_for_status,
)


@pytest.fixture(scope="module")
def scripted_blend(prod_settings, tmp_path_factory):  # type: ignore[no-untyped-def]
    return build_blend(prod_settings, "scripted", tmp_path_factory.mktemp("scripted") / "rig.blend")


def test_each_kind_of_script_that_will_not_run_is_a_warning(client, scripted_blend):
    with open(scripted_blend, "rb") as fh:
        response = client.post("/api/jobs", data={"file": (fh, "rig.blend"), "chunk_size": "2"})
    assert response.status_code == 201, response.get_data(as_text=True)
    job = response.get_json()["job"]
    assert [w["code"] for w in job["warnings"]] == ["scripts_disabled"] * 3
    messages = " | ".join(w["message"] for w in job["warnings"])
    for said in ("1 Python driver (Cube: location[0])", "1 text block registered to run (rig_ui.py)",
                 "1 OSL script node (Shader: Script)"):  # fmt: skip
        assert said in messages
    page = client.get(f"/jobs/{job['id']}").get_data(as_text=True)
    assert 'id="job-warnings"' in page and "rig_ui.py" in page


def test_farm_submit_prints_the_warnings(farm_cli, scripted_blend):
    done = farm_cli("submit", str(scripted_blend), "--frames", "1-1", "--chunk-size", "1")
    assert done.returncode == 0, done.stderr
    assert "warning: 1 Python driver (Cube: location[0]) will not run" in done.stderr


def test_trusted_scripts_run_the_files_python(prod_env, database, prod_settings, scripted_blend, tmp_path):
    env = dict(prod_env, FARM_QUEUE=f"{prod_env['FARM_QUEUE']}-{uuid.uuid4().hex[:8]}", FARM_TRUSTED_SCRIPTS="1")
    farm = FarmProcesses(env, tmp_path)
    try:
        farm.start_web()
        farm.start_worker("w")
        job_id = submit(farm.url, scripted_blend, frame_start=2, frame_end=3, chunk_size=1).json()["job"]["id"]
        job = wait_for_status(farm.url, job_id, {"COMPLETED", "FAILED"}, timeout=120)
        assert job["status"] == "COMPLETED" and job["warnings"] == [], job
        rendered = farm_frames(farm.url, job_id)
    finally:
        farm.stop_all()
    assert rendered == plain_blender_frames(prod_settings, scripted_blend, tmp_path / "on", 2, 3, trusted=True)
    assert rendered != plain_blender_frames(prod_settings, scripted_blend, tmp_path / "off", 2, 3)  # it moved
