"""What artists see, in Debian's headless Chromium against a production farm with real Blender: the New job form's
Preview button makes a preview job whose page plays its movie (through the presigned S3 redirect, under the
Content Security Policy), and a job page whose bar and chunk move inside one long frame. Screenshots land in
test-artifacts/ for a person to look at."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import build_blend, get_job, sign_in_new_admin, submit

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def page() -> Iterator[object]:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (make test does: tools/system-packages)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(120_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        context.on("console", lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None)
        yield page
        browser.close()
        assert not errors, errors  # no script error, nothing the Content Security Policy refused


def test_preview_button_makes_a_preview_whose_movie_plays(own_farm, prod_settings, tmp_path, page):
    blend = build_blend(prod_settings, "movie", tmp_path / "movie.blend")  # 4 frames, 65×37
    own_farm.start_worker("pages")
    sign_in_new_admin(page, own_farm.url, prod_settings)
    page.goto(f"{own_farm.url}/jobs/new")
    page.set_input_files("#f-file", str(blend))
    page.wait_for_function("() => document.getElementById('f-frame_end').value === '4'")  # the scene was read
    page.screenshot(path=str(ARTIFACTS / "new-job-preview-button.png"), full_page=True)
    assert page.is_checked("input[type=checkbox][name=preview_movie]")
    page.click("#preview-job")
    page.wait_for_url("**/jobs/*")
    assert page.locator(".badge.s-preview").is_visible()
    page.wait_for_function("() => !document.getElementById('movie-box').hidden")
    # it plays: Chromium decoded the H.264 it fetched through the API's redirect to presigned S3
    page.wait_for_function("() => document.getElementById('movie').readyState >= 2")
    size = page.evaluate(
        "() => [document.getElementById('movie').videoWidth, document.getElementById('movie').videoHeight]"
    )
    assert size == [16, 10]  # 65×37 at the preview's 25 % is 16×9, padded to even
    assert page.locator("#percent").inner_text() == "100.0 %"
    page.screenshot(path=str(ARTIFACTS / "job-preview-movie.png"), full_page=True)


def test_job_page_moves_inside_a_long_frame(own_farm, prod_settings, tmp_path, page):
    # one frame of 1,500 samples (~20 s here): Cycles reports sample 1, then a batch of 1,024 mid-frame
    blend = build_blend(prod_settings, "many_samples", tmp_path / "samples.blend", "1500")
    own_farm.start_worker("pages2")
    job_id = submit(own_farm.url, blend, name="long frame", frame_start=1, frame_end=1, chunk_size=1)
    job_id = job_id.json()["job"]["id"]
    sign_in_new_admin(page, own_farm.url, prod_settings)
    page.goto(f"{own_farm.url}/jobs/{job_id}")
    page.wait_for_function(
        "() => { const b = document.querySelector('#chunks .chunk-progress progress');"
        " return b && b.value > 5 && b.value < 99; }"
    )
    page.wait_for_function("() => document.getElementById('eta').textContent.endsWith(' s')")  # judged from it
    bar, percent, frames = page.evaluate(
        "() => [document.querySelector('#chunks .chunk-progress progress').value,"
        " document.getElementById('percent').textContent, document.getElementById('frames-done').textContent]"
    )
    assert frames == "0" and 5 < bar < 99 and 5 < float(percent.rstrip(" %")) < 99, (bar, percent, frames)
    page.screenshot(path=str(ARTIFACTS / "job-progress-inside-a-frame.png"), full_page=True)
    assert get_job(own_farm.url, job_id)["render"]["frames_rendered"] <= 1
