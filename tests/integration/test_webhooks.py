"""Webhooks against real receivers (HTTP servers on 127.0.0.1) and the real Postgres: a job's end is POSTed, signed,
only after its transaction commits; failed deliveries are retried with backoff and given up after the window; the
address is checked again at delivery; the API refuses private notify_urls and shows every attempt."""

from __future__ import annotations

import dataclasses
import itertools
import json
import secrets
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select, update

from farm.config import Settings
from farm.db import Database
from farm.jobs import states
from farm.models import Job, JobStatus, WebhookDelivery
from farm.webhooks import courier
from tests.helpers import wait_until
from tests.receivers import Receiver
from tests.rows import make_job

pytestmark = pytest.mark.commits  # deliveries go out after real commits, from other threads

SECRET = secrets.token_hex(16)


@pytest.fixture()
def hook_settings(prod_settings: Settings) -> Iterator[Settings]:
    """This process's courier with a secret, short backoff, and loopback receivers allowed (the test's own)."""
    settings = dataclasses.replace(
        prod_settings, webhook_secret=SECRET, webhook_allow_private=True, webhook_backoff_seconds=0.3
    )
    courier.install(settings)
    yield settings
    courier.install(prod_settings)


def job_notifying(database: Database, url: str) -> str:
    job_id = make_job(database, 2, 1, name="hooked")
    with database.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(notify_url=url))
    return job_id


def deliveries(database: Database, job_id: str) -> list[WebhookDelivery]:
    with database.session() as session:
        return list(session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)))


def test_a_job_end_is_posted_signed_after_its_commit(database, hook_settings, client):
    seen_status: list[str] = []

    def status_when_posted(_) -> None:  # what another connection sees as the POST arrives: committed or not
        with database.session() as session:
            seen_status.append(session.scalar(select(Job.status).where(Job.id == job_id)))

    with Receiver(SECRET, on_post=status_when_posted).running() as receiver:
        job_id = job_notifying(database, receiver.url)
        with database.session() as session:
            assert states.fail_job(session, job_id, "chunk 0 failed 3 times", actor="test")
            time.sleep(0.5)  # still inside the transaction: nothing may be sent yet
            assert receiver.received == []
        wait_until(lambda: receiver.received, timeout=15, what="the webhook")

    post = receiver.received[0]
    assert post.signed, post.headers
    assert post.path == "/hook?token=t0ps3cret"
    assert post.headers["Content-Type"] == "application/json" and post.headers["X-Farm-Event"] == "job.failed"
    body = post.json()
    assert body["event"] == "job.failed"
    assert body["job"]["id"] == job_id and body["job"]["status"] == "FAILED"
    assert body["job"]["error"] == "chunk 0 failed 3 times" and body["job"]["finished_at"]
    assert seen_status == [JobStatus.FAILED]  # the receiver could already read the end it was told of

    wait_until(lambda: deliveries(database, job_id)[0].status == "DELIVERED", timeout=10, what="the record")
    (row,) = deliveries(database, job_id)
    assert [a["status_code"] for a in row.attempts] == [200] and row.attempts[0]["error"] is None

    job = client.get(f"/api/jobs/{job_id}").get_json()["job"]
    (shown,) = job["webhooks"]
    assert shown["status"] == "DELIVERED" and shown["event"] == "job.failed" and shown["target"] == "notify_url"
    assert shown["url"] == receiver.url.split("/hook")[0]  # the origin only: the token stays private
    assert shown["attempts"][0]["status_code"] == 200 and shown["attempts"][0]["at"].endswith("Z")
    assert "t0ps3cret" not in json.dumps(job)
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert 'id="webhooks"' in page and "job.failed" in page and "delivered" in page


def test_a_rolled_back_end_sends_nothing(database, hook_settings):
    with Receiver(SECRET).running() as receiver:
        job_id = job_notifying(database, receiver.url)
        with pytest.raises(RuntimeError), database.session() as session:
            states.fail_job(session, job_id, "never happened", actor="test")
            raise RuntimeError("the transaction fails after the end was written")
        courier.wake()
        time.sleep(1.5)
        assert receiver.received == []
    assert deliveries(database, job_id) == []


def test_a_failing_receiver_sees_retries_with_backoff(database, hook_settings):
    with Receiver(SECRET, codes=(500, 503)).running() as receiver:
        job_id = job_notifying(database, receiver.url)
        with database.session() as session:
            states.cancel_job(session, job_id, actor="test")  # no chunk renders: CANCELED at once

        def delivered() -> bool:
            courier.wake()  # what each janitor sweep does
            return deliveries(database, job_id)[0].status == "DELIVERED"

        wait_until(delivered, timeout=30, what="the third attempt", interval=0.05)

    posts = receiver.received
    assert len(posts) == 3 and all(p.signed for p in posts)
    assert len({p.body for p in posts}) == 1  # every attempt sends the very same signed bytes
    assert posts[0].json()["event"] == "job.canceled"
    gaps = [b.at - a.at for a, b in itertools.pairwise(posts)]
    assert gaps[0] >= 0.3 and gaps[1] >= 0.6, gaps  # FARM_WEBHOOK_BACKOFF_SECONDS, then twice that
    (row,) = deliveries(database, job_id)
    assert [a["status_code"] for a in row.attempts] == [500, 503, 200]
    assert row.attempts[0]["error"] == "the receiver answered 500"


def test_a_delivery_is_given_up_after_the_retry_window(database, hook_settings):
    settings = dataclasses.replace(hook_settings, webhook_backoff_seconds=0.2, webhook_retry_seconds=1.0)
    courier.install(settings)
    with Receiver(SECRET, codes=(500,) * 50).running() as receiver:
        job_id = job_notifying(database, receiver.url)
        with database.session() as session:
            states.cancel_job(session, job_id, actor="test")

        def given_up() -> bool:
            courier.wake()
            return deliveries(database, job_id)[0].status == "FAILED"

        wait_until(given_up, timeout=30, what="the delivery to be given up", interval=0.05)
        made = len(receiver.received)
        for _ in range(10):
            courier.wake()
            time.sleep(0.1)
        assert len(receiver.received) == made  # nothing after giving up
    (row,) = deliveries(database, job_id)
    assert 2 <= len(row.attempts) == made <= 4 and row.next_attempt_at is None
    assert {a["status_code"] for a in row.attempts} == {500}


def test_the_address_is_checked_again_at_delivery(database, hook_settings):
    """A name that resolved to a public address at submission may point at a private one by delivery (DNS
    rebinding): the courier resolves it again and refuses, so the receiver on loopback hears nothing."""
    courier.install(dataclasses.replace(hook_settings, webhook_allow_private=False))
    with Receiver(SECRET).running() as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        job_id = job_notifying(database, f"http://localhost:{port}/hook")
        with database.session() as session:
            states.cancel_job(session, job_id, actor="test")
        wait_until(lambda: deliveries(database, job_id)[0].attempts, timeout=15, what="the attempt")
        assert receiver.received == []
    (row,) = deliveries(database, job_id)
    assert row.status == "PENDING" and row.attempts[0]["status_code"] is None
    assert row.attempts[0]["error"] == "refused: localhost resolves to 127.0.0.1, a loopback or private address"


def test_the_farm_wide_url_hears_every_end(database, hook_settings):
    with Receiver(SECRET).running() as farm_hook, Receiver(SECRET).running() as job_hook:
        courier.install(dataclasses.replace(hook_settings, webhook_url=farm_hook.url))
        job_id = job_notifying(database, job_hook.url)
        plain = make_job(database, 1, 1, name="no notify_url")
        with database.session() as session:
            states.cancel_job(session, job_id, actor="test")
            states.cancel_job(session, plain, actor="test")
        wait_until(lambda: len(farm_hook.received) == 2 and job_hook.received, timeout=15, what="the webhooks")
    assert {p.json()["job"]["id"] for p in farm_hook.received} == {job_id, plain}
    assert [p.json()["job"]["id"] for p in job_hook.received] == [job_id]
    assert {d.target for d in deliveries(database, job_id)} == {"farm", "notify_url"}


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/hook", "http://localhost/", "http://10.0.0.7/", "http://[::1]/", "ftp://example.org/"]
)
def test_the_api_refuses_a_private_notify_url(client, url):
    answer = client.post("/api/jobs", data={"notify_url": url, "frame_start": "1", "frame_end": "2"})
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    assert error["field"] == "notify_url" and error["code"] in ("private_address", "bad_url")
