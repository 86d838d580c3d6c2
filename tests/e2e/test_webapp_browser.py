"""The web app in a real headless Chromium (Debian's, driven by Playwright) against the real farm: `farm web` and a
`farm worker` in production mode (Redis, Postgres, S3 on moto, real Blender). Screenshots of every page land in
test-artifacts/ for a person to look at. Every page runs under the farm's Content Security Policy, which logs to the
console whatever it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import ARTIFACTS
from tests.helpers import HTTP, browser_sign_in, check_zip, make_user, submit, wait_for_status

NAME = '<i>shot 010</i> & "co"'  # user input that must show as text, never as markup
LAYOUT_SHIFTS = """
window.layoutShift = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) if (!e.hadRecentInput) window.layoutShift += e.value;
}).observe({type: "layout-shift", buffered: true});
"""  # the page's cumulative layout shift, as Chrome scores it


@pytest.fixture()
def page(chromium, farm, prod_settings):  # type: ignore[no-untyped-def]
    """A page signed in as an admin through the login form."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.add_init_script(LAYOUT_SHIFTS)
    page = context.new_page()
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    context.on("console", lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None)
    name, _ = make_user(prod_settings, "admin", password="browser test admin")
    browser_sign_in(page, farm.url, name, "browser test admin")
    yield page
    context.close()
    assert not errors, errors  # no script error on any page, nothing the Content Security Policy refused


# Waits are written as functions ("() => …"): Playwright polls a bare expression with eval, which the farm's
# Content Security Policy refuses, as it should.


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_upload_fix_a_bad_range_watch_frames_arrive_live_open_one_and_download(page, farm, slow_blend):
    page.goto(f"{farm.url}/jobs/new")
    page.set_input_files("#f-file", str(slow_blend))
    page.wait_for_function("() => document.getElementById('f-upload').value.length === 32")
    assert page.input_value("#f-frame_end") == "40"  # the scene's own range, read by Blender at upload
    assert page.input_value("#f-resolution_x") == "320"
    page.fill("#f-name", NAME)
    page.fill("#f-frame_start", "5")
    page.fill("#f-frame_end", "2")
    page.fill("#f-chunk_size", "2")
    page.click("#submit-job")
    page.wait_for_selector("[data-field=frame_end] .error")
    assert "before frame_start" in page.text_content("[data-field=frame_end] .error")
    assert page.input_value("#f-frame_start") == "5" and page.input_value("#f-name") == NAME  # kept as typed
    assert "slow.blend" in page.text_content("#upload-state")  # the file is kept too
    shot(page, "new-job-field-error")

    page.fill("#f-frame_start", "1")
    page.fill("#f-frame_end", "4")
    page.click("#submit-job")
    page.wait_for_url(f"{farm.url}/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]
    loaded_at = page.evaluate("window.farmLoadedAt")
    assert page.text_content("h1.job-name") == NAME and page.locator("h1.job-name i").count() == 0
    first_seen = int(page.text_content("#frames-done"))

    page.wait_for_function("() => document.querySelectorAll('.tile.done img').length >= 1", timeout=120_000)
    shot(page, "job-rendering")
    page.wait_for_selector("#status .s-completed", timeout=300_000)
    assert page.evaluate("window.farmLoadedAt") == loaded_at  # everything arrived without a reload
    assert page.evaluate("window.layoutShift") < 0.01  # and nothing moved while it did
    assert first_seen < 4 and page.text_content("#frames-done") == "4"
    page.wait_for_function(
        "() => [...document.querySelectorAll('.tile.done img')]"
        ".filter(i => i.complete && i.naturalWidth > 0).length === 4"
    )
    assert page.locator("#chart rect").count() == 4
    assert "finished" in page.text_content("#live-state")

    page.click("tr[data-chunk='0'] button")
    page.wait_for_function("() => document.getElementById('log').textContent.includes('Fra:1')")
    shot(page, "job-completed")

    page.click(".tile[data-frame='2']")
    page.wait_for_function("() => document.getElementById('viewer-img').naturalWidth === 320")
    assert page.evaluate("document.getElementById('viewer').open")
    shot(page, "job-frame-viewer")
    page.keyboard.press("Escape")

    with page.expect_download() as download:
        page.click("#download")
    data = Path(download.value.path()).read_bytes()
    check_zip(data, name=NAME, frames=range(1, 5), size=(320, 180))

    page.reload()  # a finished job's page: its frames and chunks come from the API, since no stream runs
    page.wait_for_function("() => document.querySelectorAll('.tile.done img').length === 4")
    assert page.locator("#chart rect").count() == 4 and page.locator("tr[data-chunk]").count() == 2
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "job-phone")
    assert HTTP.get(f"{farm.url}/api/jobs/{job_id}", timeout=10).json()["job"]["status"] == "COMPLETED"


def test_monitor_shows_the_running_worker_and_its_task_then_cancel_from_the_job_page(page, farm, slow_blend):
    response = submit(farm.url, slow_blend, name="long shot", frame_start=1, frame_end=40, chunk_size=20)
    job_id = response.json()["job"]["id"]
    wait_for_status(farm.url, job_id, {"RENDERING"}, timeout=120)

    page.goto(f"{farm.url}/workers")
    row = page.locator("tr[data-worker='w1@test']")
    row.locator(".s-online").wait_for()
    row.locator(f"a[href='/jobs/{job_id}']").wait_for()  # the chunk it renders now (refreshes every 3 s)
    task = page.locator("tr[data-task]", has=page.locator(f"a[href='/jobs/{job_id}']")).first
    task.locator(".s-started").wait_for()
    assert "farm.render_chunk" in task.text_content()
    assert page.locator("table.queues td.name", has_text=farm.env["FARM_QUEUE"]).count() >= 1
    shot(page, "workers")

    page.goto(f"{farm.url}/?q=long+shot")
    page.locator(f"tr[data-job='{job_id}'] .s-rendering").wait_for()
    shot(page, "jobs")

    blocked = page.context.new_page()  # a proxy that kills streams: the page falls back to polling
    blocked.route("**/events", lambda route: route.abort())
    blocked.goto(f"{farm.url}/jobs/{job_id}")
    blocked.wait_for_function("() => document.getElementById('live-state').textContent.startsWith('polling')")
    seen = int(blocked.text_content("#frames-done"))
    blocked.wait_for_function(
        f"() => Number(document.getElementById('frames-done').textContent) > {seen}", timeout=60_000
    )
    assert blocked.locator(".tile.done").count() > seen
    blocked.close()

    page.goto(f"{farm.url}/jobs/{job_id}")
    page.locator("#live-state.on").wait_for()
    page.click("#cancel")
    page.wait_for_selector("#status .s-canceled", timeout=60_000)
    assert page.is_visible("#retry") and not page.is_visible("#cancel")
    shot(page, "job-canceled")
    assert HTTP.get(f"{farm.url}/api/jobs/{job_id}", timeout=10).json()["job"]["status"] == "CANCELED"
