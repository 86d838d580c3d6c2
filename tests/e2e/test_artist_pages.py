"""What artists see, in Debian's headless Chromium against a production farm with real Blender: the New job form's
Preview button makes a preview job whose page plays its movie (through the presigned S3 redirect, under the
Content Security Policy). (Progress inside a frame is checked through the API, the live stream and the CLI in
test_live_progress.py.) Screenshots land in test-artifacts/ for a person to look at."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import ARTIFACTS
from tests.helpers import build_blend, sign_in_new_admin

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
