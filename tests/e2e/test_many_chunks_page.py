"""The job page of a job with more chunks than it lists, in Chromium against `farm web`: the first SHOWN_CHUNKS and
every rendering or failed chunk, in index order, a chunk far down the job appearing in its place when it starts
rendering, and a note saying where the rest are."""

from typing import Any

import pytest

from farm.jobs import states
from farm.models import Chunk, ChunkStatus
from tests.rows import make_job
from webapp.live import SHOWN_CHUNKS

pytestmark = pytest.mark.slow

ROWS = (
    "() => [...document.querySelectorAll('#chunks tr')].map((r) => [Number(r.dataset.chunk), r.cells[2].textContent])"
)


def claim(database: Any, job_id: str, index: int) -> Chunk:
    with database.session() as session:
        chunk = session.query(Chunk).filter_by(job_id=job_id, index=index).one()
        assert states.claim_chunk(session, chunk.id, "w@page", None) is not None
        session.expunge(chunk)
        return chunk


def test_the_page_lists_the_first_chunks_and_those_rendering_or_failed_in_order(
    own_farm, shared_database, chromium_page
):
    job_id = make_job(shared_database, SHOWN_CHUNKS + 200, 1)
    failed, rendering, later = SHOWN_CHUNKS + 100, SHOWN_CHUNKS + 150, SHOWN_CHUNKS + 120
    with shared_database.session() as session:
        chunk = session.merge(claim(shared_database, job_id, failed))
        states.finish_chunk(session, chunk, ChunkStatus.FAILED, worker="w@page", reason="boom")
    claim(shared_database, job_id, rendering)

    page = chromium_page
    page.set_extra_http_headers({"Authorization": f"Bearer {own_farm.admin_token}"})
    page.goto(f"{own_farm.url}/jobs/{job_id}")
    page.wait_for_function(f"() => document.querySelectorAll('#chunks tr').length === {SHOWN_CHUNKS + 2}")
    rows = page.evaluate(ROWS)
    assert [index for index, _ in rows] == [*range(SHOWN_CHUNKS), failed, rendering]
    assert [status.strip().lower() for _, status in rows[-2:]] == ["failed", "rendering"]
    assert f"first {SHOWN_CHUNKS:,} of the job's {SHOWN_CHUNKS + 200:,} chunks" in page.inner_text("main")

    claim(shared_database, job_id, later)  # arrives over the live stream, between the two
    page.wait_for_function(f"() => document.querySelectorAll('#chunks tr').length === {SHOWN_CHUNKS + 3}")
    assert [index for index, _ in page.evaluate(ROWS)][-3:] == [failed, later, rendering]
