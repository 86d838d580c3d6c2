"""The API page (/api/docs) in a real headless Chromium against a live `farm web`: reached from the header, every
operation of the description shown, its table of contents leading to each, nothing refused by the farm's Content
Security Policy (the shared page fixture checks). The screenshot lands in test-artifacts/ for a person to look at."""

from __future__ import annotations

import pytest

from farm.config import load_settings
from tests.e2e.conftest import ARTIFACTS
from tests.helpers import HTTP, sign_in_new_admin

pytestmark = pytest.mark.slow


def test_the_api_page_is_reached_from_the_header_and_shows_every_operation(own_farm, chromium_page):
    page = chromium_page
    spec = HTTP.get(f"{own_farm.url}/api/openapi.json", timeout=30).json()
    operations = [op for methods in spec["paths"].values() for op in methods.values()]
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
