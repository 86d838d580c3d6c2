"""How fast the job page of a 1,000-frame job reaches the screen, served by a real `farm web` (gunicorn).

Measures, never asserts: the full GET of /jobs/<id> (HTML with the whole state embedded) against /api/health on
the same server as the baseline, then first-contentful-paint and the time until the frame grid is built in
Debian's headless Chromium. The job's rows are written straight into the database (all frames done, as the page
looks at the end of a render), so no Blender is needed.

    .venv/bin/python -m bench.job_page [--frames 1000] [--runs 30] [--database-url postgresql://…]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from sqlalchemy import update

from farm.config import load_settings
from farm.db import Database, init_db
from farm.models import Chunk, ChunkStatus, Frame, FrameStatus, Job, JobStatus, utcnow
from tests.helpers import make_user
from tests.rows import make_job

CHROMIUM = "/usr/bin/chromium"


def finished_job(db: Database, frames: int, chunk_size: int) -> str:
    """A COMPLETED job with every frame DONE (the heaviest page to draw), from the tests' row writer."""
    job_id = make_job(db, frames, chunk_size, name="bench page")
    with db.session() as session:
        session.execute(update(Chunk).where(Chunk.job_id == job_id).values(status=ChunkStatus.DONE))
        session.execute(
            update(Frame)
            .where(Frame.job_id == job_id)
            .values(
                status=FrameStatus.DONE,
                render_time_ms=1000.0 + Frame.frame % 97,
                worker="node@bench",
                image_key=f"jobs/{job_id}/frames/bench.png",
                finished_at=utcnow(),
            )
        )
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                status=JobStatus.COMPLETED,
                frames_rendered=frames,
                render_ms_total=1000.0 * frames,
                latest_frame=frames,
                version=frames,
                resolution_x=1920,
                resolution_y=1080,
            )
        )
    return job_id


def timed_gets(url: str, runs: int, token: str) -> list[float]:
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {token}"
        http.get(url, timeout=30).raise_for_status()  # warm: templates compiled, connections pooled
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            http.get(url, timeout=30).raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
    return times


def browser_paint(url: str, runs: int, token: str) -> tuple[list[float], list[float]]:
    """First-contentful-paint, and the moment the script has drawn every tile, per fresh page load (ms); signed in
    with a token, as a kiosk would be."""
    from playwright.sync_api import sync_playwright

    paints, grids = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        for _ in range(runs + 1):
            page = browser.new_page(extra_http_headers={"Authorization": f"Bearer {token}"})
            page.goto(url, wait_until="domcontentloaded")
            page.wait_for_function("() => document.querySelectorAll('.tile.done').length > 0")
            fcp = page.evaluate("performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? -1")
            grid = page.evaluate("performance.now()")
            page.close()
            paints.append(fcp)
            grids.append(grid)
        browser.close()
    return paints[1:], grids[1:]  # the first load also warms the browser's cache of style.css and farm.js


def line(label: str, values: list[float], baseline: float | None = None) -> str:
    median = statistics.median(values)
    p90 = sorted(values)[int(0.9 * (len(values) - 1))]
    ratio = f"  ({median / baseline:.1f}× the baseline)" if baseline else ""
    return f"{label:<54} median {median:7.1f} ms   p90 {p90:7.1f} ms{ratio}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--chunk-size", type=int, default=10)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--database-url", help="default: a SQLite file in a temporary instance folder")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="farm-bench-page-") as tmp:
        env = dict(os.environ, FARM_INSTANCE_DIR=tmp, PYTHONUNBUFFERED="1")
        if args.database_url:  # a shared database: `farm web` then needs a real secret key
            env.update(FARM_DATABASE_URL=args.database_url, FARM_SECRET_KEY=secrets.token_hex(32))
        settings = load_settings(env, dotenv_path=None)
        db = Database(settings.database_url)
        init_db(db.engine)
        job_id = finished_job(db, args.frames, args.chunk_size)
        token = make_user(settings, "viewer")[1]
        small_id = finished_job(db, 4, 2)  # the baseline: the same page for a 4-frame job
        port = 5600 + os.getpid() % 300
        base = f"http://127.0.0.1:{port}"
        with open(Path(tmp) / "web.log", "wb") as log:
            web = subprocess.Popen(
                [sys.executable, "-m", "farm", "web", "--port", str(port)], env=env, stdout=log, stderr=log
            )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if requests.get(f"{base}/api/health", timeout=2).ok:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline or web.poll() is not None:
                    raise SystemExit(f"farm web did not start: {(Path(tmp) / 'web.log').read_text()[-2000:]}")
                time.sleep(0.2)
            page_url = f"{base}/jobs/{job_id}"
            size = len(requests.get(page_url, headers={"Authorization": f"Bearer {token}"}, timeout=30).content)
            health = timed_gets(f"{base}/api/health", args.runs, token)
            page = timed_gets(page_url, args.runs, token)
            frames_json = timed_gets(f"{base}/api/jobs/{job_id}/frames", args.runs, token)
            backend = settings.database_url.split(":")[0]
            print(f"job page of {args.frames} done frames ({size / 1024:.0f} KiB of HTML), database {backend}")
            print(line("GET /api/health (baseline)", health))
            print(line("GET /jobs/<id> (full HTML, state embedded)", page, statistics.median(health)))
            print(line("GET /api/jobs/<id>/frames (for comparison)", frames_json, statistics.median(health)))
            if Path(CHROMIUM).exists():
                small_paints, small_grids = browser_paint(f"{base}/jobs/{small_id}", min(args.runs, 10), token)
                paints, grids = browser_paint(page_url, min(args.runs, 10), token)
                print(line("Chromium first-contentful-paint, 4 frames (baseline)", small_paints))
                print(
                    line(
                        f"Chromium first-contentful-paint, {args.frames} frames",
                        paints,
                        statistics.median(small_paints),
                    )
                )
                print(line("Chromium every tile drawn, 4 frames (baseline)", small_grids))
                print(line(f"Chromium every tile drawn, {args.frames} frames", grids, statistics.median(small_grids)))
        finally:
            web.terminate()
            web.wait(30)
            db.engine.dispose()


if __name__ == "__main__":
    main()
