"""What artists see, in Debian's headless Chromium against a production farm with real Blender: the New job form's
Preview button makes a preview job whose page plays its movie (through the presigned S3 redirect, under the
Content Security Policy), and a job page whose bar and chunk move inside one long frame. Screenshots land in
test-artifacts/ for a person to look at."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import ARTIFACTS
from tests.helpers import build_blend, get_job, sign_in_new_admin, submit

pytestmark = pytest.mark.slow


def test_preview_button_makes_a_preview_whose_movie_plays(own_farm, prod_settings, tmp_path, chromium_page: Any):
    blend = build_blend(prod_settings, "movie", tmp_path / "movie.blend")  # 4 frames, 65×37
    own_farm.start_worker("pages")
    sign_in_new_admin(chromium_page, own_farm.url, prod_settings)
    chromium_page.goto(f"{own_farm.url}/jobs/new")
    chromium_page.set_input_files("#f-file", str(blend))
    chromium_page.wait_for_function("() => document.getElementById('f-frame_end').value === '4'")  # the scene was read
    chromium_page.screenshot(path=str(ARTIFACTS / "new-job-preview-button.png"), full_page=True)
    assert chromium_page.is_checked("input[type=checkbox][name=preview_movie]")
    chromium_page.click("#preview-job")
    chromium_page.wait_for_url("**/jobs/*")
    assert chromium_page.locator(".badge.s-preview").is_visible()
    chromium_page.wait_for_function("() => !document.getElementById('movie-box').hidden")
    # it plays: Chromium decoded the H.264 it fetched through the API's redirect to presigned S3
    chromium_page.wait_for_function("() => document.getElementById('movie').readyState >= 2")
    size = chromium_page.evaluate(
        "() => [document.getElementById('movie').videoWidth, document.getElementById('movie').videoHeight]"
    )
    assert size == [16, 10]  # 65×37 at the preview's 25 % is 16×9, padded to even
    assert chromium_page.locator("#percent").inner_text() == "100.0 %"
    chromium_page.screenshot(path=str(ARTIFACTS / "job-preview-movie.png"), full_page=True)


def test_job_page_moves_inside_a_long_frame(own_farm, prod_settings, tmp_path, chromium_page: Any):
    # one frame of 1,500 samples (~20 s here): Cycles reports sample 1 mid-frame, and on a slower machine a batch
    # of 1,024 too (it sizes its batches by speed)
    blend = build_blend(prod_settings, "many_samples", tmp_path / "samples.blend", "1500")
    own_farm.start_worker("pages2")
    job_id = submit(own_farm.url, blend, name="long frame", frame_start=1, frame_end=1, chunk_size=1)
    job_id = job_id.json()["job"]["id"]
    sign_in_new_admin(chromium_page, own_farm.url, prod_settings)
    chromium_page.goto(f"{own_farm.url}/jobs/{job_id}")
    chromium_page.wait_for_function(
        "() => { const b = document.querySelector('#chunks .chunk-progress progress');"
        " return b && b.value > 0 && b.value < 99; }"
    )
    chromium_page.wait_for_function("() => !['', '—'].includes(document.getElementById('eta').textContent.trim())")
    bar, percent, frames = chromium_page.evaluate(
        "() => [document.querySelector('#chunks .chunk-progress progress').value,"
        " document.getElementById('percent').textContent, document.getElementById('frames-done').textContent]"
    )
    assert frames == "0" and 0 < bar < 99 and 0 < float(percent.rstrip(" %")) < 99, (bar, percent, frames)
    chromium_page.screenshot(path=str(ARTIFACTS / "job-progress-inside-a-frame.png"), full_page=True)
    assert get_job(own_farm.url, job_id)["render"]["frames_rendered"] <= 1
