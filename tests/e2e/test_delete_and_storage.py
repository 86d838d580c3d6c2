"""Deleting jobs and storage used on the real farm: `farm web` and a `farm worker` (whose janitor measures and
purges) in production mode, real Blender, S3 on a moto server, over real HTTP — from the command line and from the
job page's Delete button in headless Chromium, whose screenshots land in test-artifacts/ for a person to look at."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from farm.models import Job, JobBlob, StoredBlob
from farm.projects import blob_key
from farm.storage import open_storage
from tests.e2e.conftest import ARTIFACTS
from tests.helpers import HTTP, sign_in_new_admin, submit, wait_for_status, wait_until

pytestmark = pytest.mark.slow


def stored(storage, job_id: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """The job's objects as S3 lists them: what is really stored under its prefix."""
    pages = storage.client.get_paginator("list_objects_v2").paginate(
        Bucket=storage.bucket, Prefix=f"{storage.prefix}/jobs/{job_id}/"
    )
    return {o["Key"]: o["Size"] for p in pages for o in p.get("Contents", [])}


def measured(url: str, job_id: str) -> int | None:
    return HTTP.get(f"{url}/api/jobs/{job_id}", timeout=10).json()["job"]["storage"]["bytes"]


def test_delete_button_and_storage_figures_in_chromium(chromium_page: Any, farm, tiny_blend, prod_settings, database):  # type: ignore[no-untyped-def]
    storage = open_storage(prod_settings)
    created = submit(farm.url, tiny_blend, frame_start=1, frame_end=2, chunk_size=1, name="to delete")
    assert created.status_code == 201, created.text
    job_id = created.json()["job"]["id"]
    wait_for_status(farm.url, job_id, {"COMPLETED"})
    files = stored(storage, job_id)
    assert len(files) >= 5  # two frames, their thumbnails, two logs and the zip
    # the worker's janitor measures a job after it changed (at most once a minute): the figure is what S3 holds
    size = sum(files.values())
    wait_until(lambda: measured(farm.url, job_id) == size, timeout=150, what="the janitor to measure the job")

    sign_in_new_admin(chromium_page, farm.url, prod_settings)
    chromium_page.goto(f"{farm.url}/jobs/{job_id}")
    chromium_page.wait_for_selector("#chunks tr")  # the stream's first event has arrived: the page is whole
    shown = chromium_page.text_content("#storage")
    assert shown == (f"{size} bytes" if size < 1024 else f"{size / 1024:.1f} KiB"), shown
    chromium_page.screenshot(path=str(ARTIFACTS / "job-delete-button.png"), full_page=True)

    chromium_page.goto(f"{farm.url}/workers")
    assert chromium_page.text_content("#storage-total").strip() not in ("", "—")
    farm_storage = HTTP.get(f"{farm.url}/api/storage", timeout=10).json()
    assert farm_storage["jobs_bytes"] >= size and farm_storage["total_bytes"] > farm_storage["jobs_bytes"]
    chromium_page.screenshot(path=str(ARTIFACTS / "monitor-storage.png"), full_page=True)

    chromium_page.goto(f"{farm.url}/jobs/{job_id}")
    chromium_page.once("dialog", lambda dialog: dialog.dismiss())  # "Cancel" in the confirm: nothing happens
    chromium_page.click("#delete")
    assert HTTP.get(f"{farm.url}/api/jobs/{job_id}", timeout=10).status_code == 200
    chromium_page.once("dialog", lambda dialog: dialog.accept())
    chromium_page.click("#delete")
    chromium_page.wait_for_url(f"{farm.url}/")
    assert "Job to delete deleted." in chromium_page.text_content("main")
    chromium_page.screenshot(path=str(ARTIFACTS / "job-deleted.png"), full_page=True)

    assert HTTP.get(f"{farm.url}/api/jobs/{job_id}", timeout=10).status_code == 404
    assert stored(storage, job_id) == {}
    with database.session() as session:
        assert session.scalars(select(JobBlob).where(JobBlob.job_id == job_id)).all() == []
        still_used = set(session.scalars(select(JobBlob.sha256)))
        kept = set(session.scalars(select(StoredBlob.sha256)))
    assert still_used <= kept  # a project file another job uses stays
    assert all(storage.exists(blob_key(sha)) for sha in still_used)


def test_farm_delete_cancels_an_active_job_and_everything_goes(farm, farm_cli, slow_blend, prod_settings, database):  # type: ignore[no-untyped-def]
    storage = open_storage(prod_settings)
    created = submit(farm.url, slow_blend, frame_start=1, frame_end=40, chunk_size=4, name="delete me live")
    job_id = created.json()["job"]["id"]
    wait_until(lambda: stored(storage, job_id), timeout=240, what="the first frame to be stored")

    result = farm_cli("delete", job_id)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{job_id}  deleted\n", "")
    assert HTTP.get(f"{farm.url}/api/jobs/{job_id}", timeout=10).status_code == 404
    assert job_id not in [j["id"] for j in HTTP.get(f"{farm.url}/api/jobs?limit=500", timeout=10).json()["jobs"]]

    # Blender is stopped, the cancel settles, and the worker's janitor removes the files and rows.
    def purged() -> bool:
        with database.session() as session:
            return session.get(Job, job_id) is None

    wait_until(purged, timeout=180, what="the janitor to purge the deleted job", interval=1)
    assert stored(storage, job_id) == {}

    again = farm_cli("delete", job_id)
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr.startswith("farm: ") and again.stderr.count("\n") == 1 and "404" in again.stderr
