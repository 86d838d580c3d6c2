"""The API page (/api/docs) in a real headless Chromium against a live `farm web`: reached from the header, every
operation of the description shown, its table of contents leading to each, nothing refused by the farm's Content
Security Policy. The screenshot lands in test-artifacts/ for a person to look at."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from farm.config import load_settings
from tests.helpers import HTTP, sign_in_new_admin

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def test_the_api_page_is_reached_from_the_header_and_shows_every_operation(own_farm):
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (make test does: tools/system-packages)")
    from playwright.sync_api import sync_playwright

    spec = HTTP.get(f"{own_farm.url}/api/openapi.json", timeout=30).json()
    operations = [op for methods in spec["paths"].values() for op in methods.values()]
    ARTIFACTS.mkdir(exist_ok=True)
    refused: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("pageerror", lambda exc: refused.append(str(exc)))
        page.on("console", lambda msg: refused.append(msg.text) if "Content Security Policy" in msg.text else None)
        sign_in_new_admin(page, own_farm.url, load_settings(own_farm.env, dotenv_path=None))
        page.goto(f"{own_farm.url}/")
        page.click("header nav >> text=API")
        page.wait_for_url("**/api/docs")
        assert page.text_content("h1") == "farm API"
        assert page.get_attribute("header nav a[aria-current=page]", "href") == "/api/docs"
        assert page.locator("article.api-op[id]").count() == len(operations) + len(spec["components"]["schemas"])
        page.screenshot(path=str(ARTIFACTS / "api-docs.png"), full_page=True)
        page.click(".api-toc a[href='#submit_job']")
        page.wait_for_url("**/api/docs#submit_job")
        submit = page.locator("#submit_job")
        assert submit.is_visible() and "multipart/form-data" in submit.text_content()
        for field in ("file", "manifest", "frame_start", "chunk_size", "priority"):
            assert submit.locator(f"td:first-child > code:text-is('{field}')").count() == 1, field
        page.screenshot(path=str(ARTIFACTS / "api-docs-submit.png"), full_page=False)
        with page.expect_response("**/api/openapi.json") as answer:
            page.click("text=openapi.json")
        assert answer.value.json() == spec
        browser.close()
    assert not refused, refused
