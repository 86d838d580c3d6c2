"""Progress inside one long frame, from real Blender's own output on a production farm: it moves before the frame
is stored, in the API, in the live stream (SSE) and in `farm status --wait`, and the chunk's log still has
Blender's lines."""

import json
import re
import subprocess
import sys
import threading
from typing import Any

import pytest

from tests.helpers import HTTP, build_blend, get_job, submit

pytestmark = pytest.mark.slow


def stream_events(url: str, seen: list[tuple[str, dict[str, Any]]], stop: threading.Event) -> None:
    with HTTP.get(url, headers={"Accept": "text/event-stream"}, stream=True, timeout=300) as response:
        kind = None
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind:
                seen.append((kind, json.loads(line[6:])))
                if kind == "end" or stop.is_set():
                    return


def test_progress_moves_inside_a_frame_everywhere(own_farm, prod_settings, tmp_path):
    blend = build_blend(prod_settings, "many_samples", tmp_path / "samples.blend", "1500")  # ~20 s a frame here
    own_farm.start_worker("prog")
    job_id = submit(own_farm.url, blend, name="long", frame_start=1, frame_end=1, chunk_size=1).json()["job"]["id"]

    seen: list[tuple[str, dict[str, Any]]] = []
    stop = threading.Event()
    reader = threading.Thread(
        target=stream_events, args=(f"{own_farm.url}/api/jobs/{job_id}/events", seen, stop), daemon=True
    )
    reader.start()
    cli = subprocess.Popen(
        [sys.executable, "-m", "farm", "status", job_id, "--wait"],
        env=own_farm.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    polled = []
    while (job := get_job(own_farm.url, job_id))["status"] not in {"COMPLETED", "FAILED"}:
        chunk = HTTP.get(f"{own_farm.url}/api/jobs/{job_id}/chunks", timeout=10).json()["chunks"][0]
        polled.append((job["render"]["frames_rendered"], job["render"]["progress"], chunk["progress"]))
        threading.Event().wait(0.3)
    out, err = cli.communicate(timeout=60)
    stop.set()
    reader.join(30)
    assert job["status"] == "COMPLETED", job

    # the API: inside the frame, before it was stored, both the job's and the chunk's number moved
    inside = [(p, c) for rendered, p, c in polled if rendered == 0 and 0 < p < 100]
    assert inside and all(p == c and p <= 99 for p, c in inside), polled
    # Cycles sizes its batches of samples by the machine's speed: a fast one may report only sample 1 mid-frame
    # (0.1 %), a slower one a batch of 1,024 as well; either way the number moved before the frame was stored.
    assert job["render"]["progress"] == 100.0
    done = HTTP.get(f"{own_farm.url}/api/jobs/{job_id}/chunks", timeout=10).json()["chunks"][0]
    assert done["status"] == "DONE" and done["progress"] == 100.0

    # the live stream carried it too, in its updates of the job and of the chunk
    updates = [data for kind, data in seen if kind == "update"]
    assert any(0 < u["job"]["render"]["progress"] < 100 and u["job"]["render"]["frames_rendered"] == 0 for u in updates)
    assert any(0 < c["progress"] < 100 for u in updates for c in u["chunks"])
    assert seen[-1][0] == "end"

    # `farm status --wait`, piped, prints a line per change: one of them inside the frame
    assert cli.returncode == 0 and json.loads(out)["status"] == "COMPLETED"
    percents = [float(m.group(1)) for m in re.finditer(r"\]\s+([\d.]+) %\s+0/1 frames", err)]
    assert any(0 < p < 99 for p in percents), err

    log = HTTP.get(done["log_url"], timeout=10).text
    assert "Sample 1500/1500" in log  # Blender's lines still reach the log people read
