"""Progress inside one long frame, from real Blender's own output on a production farm: it moves before the frame
is stored, in the API, in the live stream (SSE), on the job page in Chromium and in `farm status --wait`, and the
chunk's log still has Blender's lines."""

import json
import re
import subprocess
import sys
import threading
from typing import Any

import pytest

from tests.e2e.conftest import ARTIFACTS
from tests.helpers import HTTP, build_blend, get_job, submit

pytestmark = pytest.mark.slow


def stream_events(url: str, seen: list[tuple[str, dict[str, Any]]]) -> None:
    """Read the job's live stream until its `end` event (the farm closes it there)."""
    with HTTP.get(url, headers={"Accept": "text/event-stream"}, stream=True, timeout=300) as response:
        kind = None
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind:
                seen.append((kind, json.loads(line[6:])))
                if kind == "end":
                    return


ON_PAGE = "() => [document.getElementById('frames-done').textContent, document.getElementById('percent').textContent]"


def test_progress_moves_inside_a_frame_everywhere(own_farm, prod_settings, tmp_path, chromium_page):
    # 1,000 samples at 400×225, stopped at Cycles' 6 s time limit: a frame long enough to watch on a fast machine or
    # a loaded one; Cycles reports sample 1 (0.1 %) at once, then batches as large as the machine's speed allows
    blend = build_blend(prod_settings, "many_samples", tmp_path / "samples.blend", "1000:6")
    own_farm.start_worker("prog")
    job_id = submit(own_farm.url, blend, name="long", frame_start=1, frame_end=1, chunk_size=1).json()["job"]["id"]

    seen: list[tuple[str, dict[str, Any]]] = []
    reader = threading.Thread(
        target=stream_events, args=(f"{own_farm.url}/api/jobs/{job_id}/events", seen), daemon=True
    )
    reader.start()
    cli = subprocess.Popen(
        [sys.executable, "-m", "farm", "status", job_id, "--wait"],
        env=own_farm.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    page = chromium_page  # the job page, signed in with a token as a kiosk would be, kept open all along
    page.set_extra_http_headers({"Authorization": f"Bearer {own_farm.admin_token}"})
    page.goto(f"{own_farm.url}/jobs/{job_id}")
    loaded_at = page.evaluate("window.farmLoadedAt")
    polled, shown = [], []
    while (job := get_job(own_farm.url, job_id))["status"] not in {"COMPLETED", "FAILED"}:
        chunk = HTTP.get(f"{own_farm.url}/api/jobs/{job_id}/chunks", timeout=10).json()["chunks"][0]
        polled.append((job["render"]["frames_rendered"], job["render"]["progress"], chunk["progress"]))
        shown.append(page.evaluate(ON_PAGE))
        if shown[-1][0] == "0" and shown[-1][1] != "0.0 %" and shown[-2:-1] != shown[-1:]:  # a new share: show it
            page.screenshot(path=str(ARTIFACTS / "job-inside-a-frame.png"), full_page=True)
        threading.Event().wait(0.3)
    out, err = cli.communicate(timeout=60)
    reader.join(30)
    assert job["status"] == "COMPLETED", job

    # the API: inside the frame, before it was stored, both the job's and the chunk's number moved
    inside = [(p, c) for rendered, p, c in polled if rendered == 0 and 0 < p < 100]
    assert inside and all(p <= 99 and c <= 99 for p, c in inside), polled  # (read a moment apart, they may differ)
    assert any(0 < c < 100 for rendered, _, c in polled if rendered == 0), polled
    assert job["render"]["progress"] == 100.0
    done = HTTP.get(f"{own_farm.url}/api/jobs/{job_id}/chunks", timeout=10).json()["chunks"][0]
    assert done["status"] == "DONE" and done["progress"] == 100.0

    # the live stream carried it too, in its updates of the job and of the chunk
    updates = [data for kind, data in seen if kind == "update"]
    assert any(0 < u["job"]["render"]["progress"] < 100 and u["job"]["render"]["frames_rendered"] == 0 for u in updates)
    assert any(0 < c["progress"] < 100 for u in updates for c in u["chunks"])
    assert seen[-1][0] == "end"

    # the job page showed it live, without a reload: a share of the frame before the frame was stored
    assert any(done == "0" and 0 < float(percent.removesuffix(" %")) < 100 for done, percent in shown), shown
    page.wait_for_function("() => document.getElementById('percent').textContent === '100.0 %'")
    assert page.evaluate("window.farmLoadedAt") == loaded_at

    # `farm status --wait`, piped, prints a line per change: one of them inside the frame
    assert cli.returncode == 0 and json.loads(out)["status"] == "COMPLETED"
    percents = [float(m.group(1)) for m in re.finditer(r"\]\s+([\d.]+) %\s+0/1 frames", err)]
    assert any(0 < p < 99 for p in percents), err

    log = HTTP.get(done["log_url"], timeout=10).text
    assert re.search(r"Sample \d+/1000", log)  # Blender's lines still reach the log people read
