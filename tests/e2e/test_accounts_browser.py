"""Accounts in a real headless Chromium against the real farm (`farm web` and a worker on Redis, Postgres, S3 on
moto, real Blender): an artist signs in, submits through the New job page, sees their name on the job and in the
header, finds no worker buttons, makes a token that is shown once, and signs out; an admin sees the buttons and the
Users page. Screenshots land in test-artifacts/ for a person to look at."""

from __future__ import annotations

import pytest

from tests.e2e.test_webapp_browser import shot
from tests.helpers import HTTP, browser_sign_in, make_user, wait_for_status

pytestmark = pytest.mark.slow
PASSWORD = "a browser's password"


def new_page(chromium):  # type: ignore[no-untyped-def]
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(60_000)
    return page


def test_an_artist_signs_in_submits_sees_no_worker_buttons_makes_a_token_and_signs_out(
    chromium, farm, prod_settings, tiny_blend
):  # type: ignore[no-untyped-def]
    artist, _ = make_user(prod_settings, "artist", password=PASSWORD)
    page = new_page(chromium)
    page.goto(f"{farm.url}/workers")
    page.wait_for_url(
        lambda url: url.startswith(f"{farm.url}/login?next=/")
    )  # signed out: the login form, then back to where it was going
    page.fill("#username", artist)
    page.fill("#password", "not it")
    page.click("#sign-in")
    assert "Wrong name or password" in page.text_content("#login-error")
    shot(page, "login-refused")
    page.fill("#password", PASSWORD)
    page.click("#sign-in")
    page.wait_for_url(f"{farm.url}/workers")
    assert page.text_content("#me").split() == [artist, "artist"]
    assert page.locator("table.workers tbody tr[data-worker]").count() >= 1
    assert page.locator("table.workers button").count() == 0  # no Disable (or Enable) for an artist
    assert page.locator("nav a", has_text="Users").count() == 0
    shot(page, "workers-as-artist")

    page.click("nav a:text('New job')")
    page.set_input_files("#f-file", str(tiny_blend))
    page.wait_for_function("() => document.getElementById('f-upload').value.length === 32")
    page.fill("#f-name", "artist shot")
    page.fill("#f-frame_start", "1")
    page.fill("#f-frame_end", "2")
    page.click("#submit-job")
    page.wait_for_url(f"{farm.url}/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]
    assert page.text_content("#owner") == artist and page.is_visible("#cancel")  # their own job: they may cancel
    assert wait_for_status(farm.url, job_id, {"COMPLETED"})["owner"] == artist
    shot(page, "job-of-artist")

    page.goto(f"{farm.url}/?owner=me")
    assert page.locator(f"tr[data-job='{job_id}'] td.owner").text_content() == artist
    assert page.locator("tr[data-job]").count() == 1

    page.goto(f"{farm.url}/tokens")
    page.fill("input[name=name]", "laptop")
    page.click("#create-token")
    token = page.text_content("#new-token code.secret").strip()
    assert token.startswith("farm_")
    assert HTTP.get(f"{farm.url}/api/me", headers={"Authorization": f"Bearer {token}"}).json()["user"]["name"] == artist
    shot(page, "my-tokens-new")
    page.goto(f"{farm.url}/tokens")
    assert token not in page.content() and token[:13] in page.content()  # shown once; then only its first characters

    page.click("#logout")
    page.wait_for_url(f"{farm.url}/login")
    page.goto(f"{farm.url}/")
    page.wait_for_url(lambda url: url.startswith(f"{farm.url}/login?next=/"))
    shot(page, "signed-out")
    page.context.close()


def test_an_admin_sees_the_worker_buttons_and_manages_users(chromium, farm, prod_settings):  # type: ignore[no-untyped-def]
    admin, _ = make_user(prod_settings, "admin", password=PASSWORD)
    viewer, _ = make_user(prod_settings, "viewer", password=PASSWORD)
    page = new_page(chromium)
    browser_sign_in(page, farm.url, admin, PASSWORD)
    page.goto(f"{farm.url}/workers")
    assert page.locator("table.workers button", has_text="Disable").count() >= 1
    shot(page, "workers-as-admin")

    page.goto(f"{farm.url}/users")
    user = page.locator(f"section[data-user='{viewer}']")
    user.locator("select[name=role]").select_option("artist")
    user.locator("button", has_text="Change role").click()
    assert f"{viewer}'s role is now artist" in page.text_content(".flash.ok")
    page.locator(f"section[data-user='{viewer}'] button", has_text="Disable").click()
    assert f"{viewer} is disabled" in page.text_content(".flash.ok")
    shot(page, "users")
    page.context.close()

    refused = new_page(chromium)
    refused.goto(f"{farm.url}/login")
    refused.fill("#username", viewer)
    refused.fill("#password", PASSWORD)
    refused.click("#sign-in")
    assert "Wrong name or password" in refused.text_content("#login-error")  # disabled: no way in
    refused.context.close()
