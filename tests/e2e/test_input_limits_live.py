"""What a live `farm web` (gunicorn in front of the app) answers to over-long URLs and headers, and the 503 `busy`
of a web process already running as many Blender probes as it may."""

from __future__ import annotations

import concurrent.futures

import pytest

from tests.helpers import HTTP, FarmProcesses, submit, wait_until


@pytest.mark.parametrize("length", [6000, 20000])
def test_a_long_url_is_414_json_from_farm_web(farm, length):
    """6,000 bytes reaches the app (gunicorn's default would refuse it with HTML); 20,000 is past what gunicorn reads
    at all, and its own refusal is the contract's JSON too."""
    response = HTTP.get(f"{farm.url}/api/jobs?q={'a' * length}", timeout=10)
    assert response.status_code == 414, response.text[:300]
    assert response.headers["Content-Type"].startswith("application/json"), response.text[:300]
    assert response.json()["error"]["code"] == "uri_too_long"


def test_what_gunicorn_refuses_itself_is_json(farm):
    response = HTTP.get(f"{farm.url}/api/health", headers={"X-Big": "a" * 10000}, timeout=10)
    assert response.status_code == 431, response.text[:300]
    assert response.json()["error"]["code"] == "request_header_fields_too_large"
    assert "<html" not in response.text


def test_two_submissions_at_once_with_one_probe_allowed(prod_env, database, slow_blend, tmp_path):
    """A live `farm web` allowed one probe: while a slow probe (a frame of 4,096 samples, stopped after 4 s) runs,
    a second submission is answered 503 busy at once; the first still succeeds."""
    env = {
        **prod_env,
        "FARM_MAX_PROBES": "1",
        "FARM_PROBE_FRAME_SECONDS": "4",
        "FARM_QUEUE": prod_env["FARM_QUEUE"] + "-busy",  # no worker renders what is accepted here
        "FARM_INSTANCE_DIR": str(tmp_path / "instance"),  # its own, where each running probe has a probe-* folder
    }
    probes = tmp_path / "instance" / "tmp"
    web = FarmProcesses(env, tmp_path)
    web.start_web()
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = pool.submit(submit, web.url, slow_blend, frame_start=1, frame_end=2, samples=4096)
            wait_until(lambda: any(probes.glob("probe-*")), timeout=60, what="the first submission's probe to start")
            second = submit(web.url, slow_blend, frame_start=1, frame_end=1, chunk_size=1)
            assert not slow.done()  # answered while the first probe runs, not after it
            first = slow.result()
        assert second.status_code == 503, second.text
        assert second.json()["error"]["code"] == "busy" and second.headers["Retry-After"].isdigit()
        assert first.status_code == 201, first.text
        HTTP.post(f"{web.url}/api/jobs/{first.json()['job']['id']}/cancel", timeout=10)
    finally:
        web.stop_all()
