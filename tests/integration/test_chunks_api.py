"""`GET /api/jobs/<id>/chunks` a page at a time on the real Postgres: by index, `limit` and `offset`, a `status`
filter with its own `total`, every bad query a 400 naming its field; and a cancel revokes only what it saves work
for (the tasks of QUEUED chunks)."""

from __future__ import annotations

from typing import Any

import pytest

from farm.jobs import states
from farm.models import Chunk, ChunkStatus
from tests.integration.test_api_jobs import assert_error
from tests.rows import make_job
from webapp.api.jobs import CHUNKS_PAGE


def chunks(client: Any, job_id: str, query: str = "") -> dict[str, Any]:
    response = client.get(f"/api/jobs/{job_id}/chunks{query}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def test_a_job_of_more_chunks_than_a_page_is_read_a_page_at_a_time(client, database):
    job_id = make_job(database, CHUNKS_PAGE + 5, 1)
    first = chunks(client, job_id)
    assert (first["total"], first["limit"], first["offset"]) == (CHUNKS_PAGE + 5, CHUNKS_PAGE, 0)
    assert [c["index"] for c in first["chunks"]] == list(range(CHUNKS_PAGE))
    rest = chunks(client, job_id, f"?offset={CHUNKS_PAGE}")
    assert [(c["index"], c["frame_start"]) for c in rest["chunks"]] == [(i, i + 1) for i in range(CHUNKS_PAGE, 1005)]
    middle = chunks(client, job_id, "?offset=10&limit=3")
    assert [c["index"] for c in middle["chunks"]] == [10, 11, 12] and middle["total"] == CHUNKS_PAGE + 5
    assert chunks(client, job_id, "?offset=2000")["chunks"] == []


def test_a_small_job_still_gets_every_chunk_in_order(client, database):
    job_id = make_job(database, 9, 3)
    page = chunks(client, job_id)
    assert [(c["index"], c["frame_start"], c["frame_end"]) for c in page["chunks"]] == [(0, 1, 3), (1, 4, 6), (2, 7, 9)]
    assert page["total"] == 3 and page["chunks"][0]["status"] == "QUEUED"


def test_the_status_filter_narrows_the_page_and_its_total(client, database):
    job_id = make_job(database, 10, 1)
    with database.session() as session:
        rows = {c.index: c for c in session.query(Chunk).filter_by(job_id=job_id)}
        for index in (7, 2):
            assert states.claim_chunk(session, rows[index].id, f"w{index}@test", None) is not None
        states.finish_chunk(session, rows[7], ChunkStatus.FAILED, worker="w7@test", reason="boom")
    rendering = chunks(client, job_id, "?status=rendering")
    assert [(c["index"], c["worker"]) for c in rendering["chunks"]] == [(2, "w2@test")] and rendering["total"] == 1
    live = chunks(client, job_id, "?status=RENDERING,FAILED")
    assert [(c["index"], c["status"]) for c in live["chunks"]] == [(2, "RENDERING"), (7, "FAILED")]
    assert live["chunks"][1]["error"] == "boom" and live["total"] == 2
    queued = chunks(client, job_id, "?status=QUEUED&offset=1&limit=2")
    assert [c["index"] for c in queued["chunks"]] == [1, 3] and queued["total"] == 8
    assert chunks(client, job_id, "?status=DONE") == {"chunks": [], "total": 0, "limit": CHUNKS_PAGE, "offset": 0}


@pytest.mark.parametrize(
    ("query", "code", "field"),
    [
        ("status=COMPLETED", "unknown_choice", "status"),  # a job's status, not a chunk's
        ("status=QUEUED,nope", "unknown_choice", "status"),
        ("limit=0", "out_of_range", "limit"),
        (f"limit={CHUNKS_PAGE + 1}", "out_of_range", "limit"),
        ("limit=abc", "out_of_range", "limit"),
        ("offset=-1", "out_of_range", "offset"),
    ],
)
def test_bad_queries_name_their_field(client, database, query, code, field):
    job_id = make_job(database, 2, 1)
    assert_error(client.get(f"/api/jobs/{job_id}/chunks?{query}"), 400, code, field)


def test_a_cancel_revokes_the_tasks_of_queued_chunks_only(app, client, database, monkeypatch):
    """A running task is not stopped by a revoke (its renderer reads the cancel in the database), and an ended
    chunk's task has run: only the queued ones' messages are worth dropping. The broadcast itself is recorded
    here instead of sent, as it would go to every worker listening on the test's broker."""
    job_id = make_job(database, 4, 1)
    with database.session() as session:
        rows = sorted(session.query(Chunk).filter_by(job_id=job_id), key=lambda c: c.index)
        for row in rows:
            row.task_id = f"task-{row.index}"
        session.flush()
        assert states.claim_chunk(session, rows[0].id, "w@test", "task-0") is not None
        assert states.claim_chunk(session, rows[1].id, "w@test", "task-1") is not None
        states.finish_chunk(session, rows[1], ChunkStatus.DONE, worker="w@test")
    revoked: list[list[str]] = []
    monkeypatch.setattr(app.extensions["celery"].control, "revoke", lambda ids, **_: revoked.append(list(ids)))
    assert client.post(f"/api/jobs/{job_id}/cancel").status_code == 202
    assert revoked == [["task-2", "task-3"]]
    assert [c["status"] for c in chunks(client, job_id)["chunks"]] == ["RENDERING", "DONE", "CANCELED", "CANCELED"]
