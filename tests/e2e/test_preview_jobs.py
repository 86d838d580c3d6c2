"""Preview jobs on a production farm with real Blender: a quarter of the size with few samples, served before the
queued chunks of a job submitted earlier, and deleted by the janitor once FARM_PREVIEW_TTL_HOURS have passed."""

import dataclasses
import io
import time
import zipfile

import pytest

from farm.celery_app import make_celery
from farm.config import load_settings
from farm.db import Database
from farm.messaging.janitor import Janitor
from farm.storage import open_storage
from tests.helpers import HTTP, check_zip, get_job, submit, wait_for_status, wait_until

pytestmark = pytest.mark.slow


def test_a_preview_overtakes_queued_work_and_expires(own_farm, slow_blend, tiny_blend):
    own_farm.start_worker("pv", concurrency=1)
    big = submit(own_farm.url, slow_blend, name="big", frame_start=1, frame_end=12, chunk_size=1)
    big_id = big.json()["job"]["id"]
    wait_until(lambda: get_job(own_farm.url, big_id)["render"]["frames_rendered"] >= 1, timeout=180, what="big")

    answer = submit(own_farm.url, tiny_blend, name="look", frame_start=1, frame_end=2, preview=1)
    assert answer.status_code == 201, answer.text
    preview = answer.json()["job"]
    assert preview["preview"] is True and preview["settings"]["resolution_percentage"] == 25
    assert preview["settings"]["samples"] == 4  # the scene's own 4: fewer than the preview's cap of 16
    assert preview["settings"]["chunk_size"] == 1

    done = wait_for_status(own_farm.url, preview["id"], {"COMPLETED", "FAILED"}, timeout=180)
    assert done["status"] == "COMPLETED", done
    still = get_job(own_farm.url, big_id)
    assert still["status"] == "RENDERING" and still["render"]["frames_rendered"] < 12  # it went first
    zipped = HTTP.get(done["asset"]["url"], timeout=30).content
    check_zip(zipped, name="look", frames=range(1, 3), size=(16, 9))  # 64×36 at 25 %
    assert done["movie"]["filename"] == "look-0001-0002.mp4"

    # the janitor leaves it while it is young, and deletes files and rows once FARM_PREVIEW_TTL_HOURS passed
    settings = load_settings(own_farm.env, dotenv_path=None)
    database = Database(settings.database_url)
    storage = open_storage(settings)
    keys = [f"jobs/{done['id']}/look-0001-0002.zip", f"jobs/{done['id']}/look-0001-0002.mp4"]
    assert all(storage.exists(k) for k in keys)
    young = Janitor(database, make_celery(settings), settings, name="janitor@test").sweep()
    assert done["id"] not in young.previews_expired
    time.sleep(1.5)
    short = dataclasses.replace(settings, preview_ttl_hours=1 / 3600)  # one second
    swept = Janitor(database, make_celery(short), short, name="janitor@test").sweep()
    assert done["id"] in swept.previews_expired and big_id not in swept.previews_expired
    assert HTTP.get(f"{own_farm.url}/api/jobs/{done['id']}", timeout=10).status_code == 404
    assert not any(storage.exists(k) for k in keys)
    assert get_job(own_farm.url, big_id)["status"] in {"RENDERING", "PACKAGING", "UPLOADING", "COMPLETED"}
    zipfile.ZipFile(io.BytesIO(zipped)).testzip()
    database.engine.dispose()
