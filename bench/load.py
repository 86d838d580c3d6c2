"""Load on the web app's API: status polls at a steady rate, live job pages (SSE) held open, and concurrent
submitters, for a set time; it reports each kind's rate, p50, p99 and errors.

    python -m bench.load [--duration 300] [--submitters 50] [--rounds 1] [--polls 500] [--streams 50]
        [--web-workers 2] [--web-threads 32]

Alone, it starts its own farm (the machine's Postgres and Redis, a database and queue of its own, moto S3, `farm web`
with `--web-workers` processes, no render workers: submitted jobs wait QUEUED) and writes bench/results/load.md.
With `--url`, `--token` and `--job`, it loads a farm that is already running (bench/scale.py starts it that way,
in a process of its own so that the load's own CPU is not the farm's) until it is stopped (SIGTERM) or
`--duration` passes, and writes its figures as JSON to `--out`.

What counts as an error: a poll that is not 200, a stream refused other than with 503 `too_many_streams` (a page
beyond the web process's stream budget polls instead, as the job page does: the harness then polls the job every
3 s; the page also re-reads chunks and frames when the job moved, which the harness does not), a submission that is
not 201 other than 503 `busy` (the probe limit, FARM_MAX_PROBES: the submitter waits its Retry-After and sends the
file again, as `farm submit` does), and any connection error or timeout (10 s; 120 s for a submission).
Submitters each have their own user, so FARM_SUBMIT_LIMIT (per user) is not what is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import signal
import statistics
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests

STREAM_FALLBACK_SECONDS = 3.0  # the job page's polling interval once its stream is refused (webapp/static/farm.js)


def percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


@dataclass
class Tally:
    """Latencies and outcomes of one kind of request."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    other: Counter[str] = field(default_factory=Counter)  # answers that are not errors: busy, degraded
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, seconds: float, error: str | None = None) -> None:
        with self.lock:
            self.latencies.append(seconds)
            if error:
                self.errors[error] += 1

    def summary(self, duration: float) -> dict[str, Any]:
        return {
            "count": len(self.latencies),
            "rate": len(self.latencies) / duration if duration else 0.0,
            "p50_ms": percentile(self.latencies, 50) * 1000,
            "p99_ms": percentile(self.latencies, 99) * 1000,
            "max_ms": max(self.latencies, default=0.0) * 1000,
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "other": dict(self.other),
        }


class Load:
    """The threads that make the load, against one farm; `stop` ends them."""

    def __init__(self, url: str, token: str, job_id: str, *, polls: float, streams: int) -> None:
        parsed = urlparse(url)
        self.url, self.host, self.port = url, parsed.hostname or "127.0.0.1", parsed.port or 80
        self.token, self.job_id = token, job_id
        self.polls_per_second, self.streams = polls, streams
        self.stop = threading.Event()
        self.polls, self.stream_opens, self.submissions = Tally(), Tally(), Tally()
        self.degraded = 0
        self.threads: list[threading.Thread] = []

    def _connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=10)

    def get_job(self, conn: http.client.HTTPConnection) -> tuple[http.client.HTTPConnection, str | None]:
        """One status poll on a kept-alive connection (a new one after a failure); what went wrong, if anything. A
        kept-alive connection the server closed meanwhile (gunicorn keeps one 2 s) is opened again and the poll
        sent again, as browsers and HTTP libraries do; a fresh connection that fails is an error."""
        started = time.monotonic()
        error = None
        for fresh in (False, True):
            try:
                conn.request("GET", f"/api/jobs/{self.job_id}", headers={"Authorization": f"Bearer {self.token}"})
                response = conn.getresponse()
                response.read()
                error = None if response.status == 200 else f"poll {response.status}"
                break
            except (OSError, http.client.HTTPException) as exc:
                error = f"poll {type(exc).__name__}"
                conn.close()
                conn = self._connection()
                if fresh or isinstance(exc, TimeoutError):
                    break
        self.polls.add(time.monotonic() - started, error)
        if error:
            conn.close()
            conn = self._connection()
        return conn, error

    def poll(self, every: float, offset: float) -> None:
        conn = self._connection()
        due = time.monotonic() + offset
        while not self.stop.wait(max(0.0, due - time.monotonic())):
            conn, _ = self.get_job(conn)
            due += every
        conn.close()

    def stream(self) -> None:
        """A live job page: its stream held open, read until the job ends (then opened again, as a new visitor);
        refused with too_many_streams, it polls every 3 s as the page does."""
        headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {self.token}"}
        while not self.stop.is_set():
            conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            started = time.monotonic()
            try:
                conn.request("GET", f"/api/jobs/{self.job_id}/events", headers=headers)
                response = conn.getresponse()
                if response.status == 503 and b"too_many_streams" in response.read():
                    self.stream_opens.add(time.monotonic() - started)
                    with self.stream_opens.lock:
                        self.stream_opens.other["degraded to polling"] += 1
                    conn.close()
                    self.fall_back_to_polling()
                    return
                self.stream_opens.add(time.monotonic() - started, None if response.status == 200 else "stream")
                while not self.stop.is_set() and response.readline():
                    pass
            except (OSError, http.client.HTTPException) as exc:
                if not self.stop.is_set():
                    self.stream_opens.add(time.monotonic() - started, f"stream {type(exc).__name__}")
            finally:
                conn.close()
            self.stop.wait(1)

    def fall_back_to_polling(self) -> None:
        conn = self._connection()
        while not self.stop.wait(STREAM_FALLBACK_SECONDS):
            conn, _ = self.get_job(conn)
        conn.close()

    def submit(self, blend: Path, token: str, fields: dict[str, str], rounds: int) -> None:
        """One submitter: sends the file `rounds` times (0: until stopped), each as soon as the last was answered, and
        again after Retry-After when the answer is busy."""
        data = blend.read_bytes()
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        made = 0
        while not self.stop.is_set() and (not rounds or made < rounds):
            started = time.monotonic()
            wait = 0.0
            try:
                response = session.post(
                    f"{self.url}/api/jobs", files={"file": (blend.name, data)}, data=fields, timeout=120
                )
                elapsed = time.monotonic() - started
                if response.status_code == 503 and response.json()["error"]["code"] == "busy":
                    self.submissions.add(elapsed)
                    with self.submissions.lock:
                        self.submissions.other["503 busy (sent again)"] += 1
                    wait = float(response.headers.get("Retry-After", "5"))
                else:
                    refused = None if response.status_code == 201 else f"submit {response.status_code}"
                    self.submissions.add(elapsed, refused)
                    made += 1
            except (requests.RequestException, ValueError) as exc:
                self.submissions.add(time.monotonic() - started, f"submit {type(exc).__name__}")
                made += 1
            self.stop.wait(wait)

    def start(self, submitters: list[tuple[Path, str, dict[str, str], int]] | None = None) -> None:
        pollers = max(16, int(self.polls_per_second / 8))
        every = pollers / self.polls_per_second if self.polls_per_second else 0.0
        if every:
            self.threads += [
                threading.Thread(target=self.poll, args=(every, every * i / pollers), daemon=True)
                for i in range(pollers)
            ]
        self.threads += [threading.Thread(target=self.stream, daemon=True) for _ in range(self.streams)]
        self.threads += [threading.Thread(target=self.submit, args=s, daemon=True) for s in submitters or []]
        for thread in self.threads:
            thread.start()

    def summary(self, duration: float) -> dict[str, Any]:
        return {
            "duration": duration,
            "polls_asked": self.polls_per_second,
            "streams_asked": self.streams,
            "polls": self.polls.summary(duration),
            "streams": self.stream_opens.summary(duration),
            "submissions": self.submissions.summary(duration),
        }


def attached(args: argparse.Namespace) -> None:
    """Load a running farm until SIGTERM (or --duration), then write the summary to --out."""
    load = Load(args.url, args.token, args.job, polls=args.polls, streams=args.streams)
    signal.signal(signal.SIGTERM, lambda *_: load.stop.set())
    started = time.monotonic()
    load.start()
    while not load.stop.wait(1):
        if args.duration and time.monotonic() - started > args.duration:
            load.stop.set()
    Path(args.out).write_text(json.dumps(load.summary(time.monotonic() - started)))


def standalone(args: argparse.Namespace) -> None:
    from bench.common import make_scene, report, services
    from farm.config import load_settings
    from tests.helpers import FarmProcesses, make_user, submit

    with tempfile.TemporaryDirectory(prefix="farm-load-") as tmp_name:
        tmp = Path(tmp_name)
        with services(tmp) as env:
            settings = load_settings(env, dotenv_path=None)
            blend = make_scene(env, tmp / "scene.blend", frames=10, width=64, height=36, samples=1)
            (tmp / "logs").mkdir()
            procs = FarmProcesses(env, tmp / "logs")
            try:
                procs.start_web(workers=args.web_workers, threads=args.web_threads)
                watched = submit(procs.url, blend, name="watched", frame_start=1, frame_end=10, chunk_size=1)
                watched.raise_for_status()
                fields = {"frame_start": "1", "frame_end": "10", "chunk_size": "2", "name": "load"}
                submitters = [
                    (blend, make_user(settings, "artist")[1], fields, args.rounds) for _ in range(args.submitters)
                ]
                load = Load(
                    procs.url, procs.admin_token, watched.json()["job"]["id"], polls=args.polls, streams=args.streams
                )
                started = time.monotonic()
                load.start(submitters)
                time.sleep(args.duration)
                load.stop.set()
                found = load.summary(time.monotonic() - started)
            finally:
                procs.stop_all()
    per_process = max(1, args.web_threads * 3 // 4)
    rows = [row(name, found[name]) for name in ("polls", "streams", "submissions")]
    each = f"{args.rounds} submission{'s' if args.rounds > 1 else ''} each" if args.rounds else "submitting throughout"
    report(
        "load",
        f"API load: {args.polls:g} status polls/s, {args.streams} live pages, {args.submitters} concurrent "
        f"submitters ({each}), {args.duration:g} s",
        ("requests", "made", "rate", "p50", "p99", "max", "errors", "other answers"),
        rows,
        notes=f"`farm web --workers {args.web_workers} --threads {args.web_threads}`: {per_process * args.web_workers} "
        f"live streams in all ({per_process} a process); the other pages poll. No render workers: submitted jobs "
        "wait QUEUED. The load's own process and the farm share the machine's 2 cores.",
    )


def row(name: str, found: dict[str, Any]) -> tuple[object, ...]:
    errors = ", ".join(f"{k} ×{v}" for k, v in found["error_kinds"].items())
    other = ", ".join(f"{k} ×{v}" for k, v in found["other"].items())
    return (
        name,
        found["count"],
        f"{found['rate']:.1f}/s",
        f"{found['p50_ms']:.0f} ms",
        f"{found['p99_ms']:.0f} ms",
        f"{found['max_ms']:.0f} ms",
        f"{found['errors']}" + (f" ({errors})" if errors else ""),
        other or "—",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load (attached: 0 = until SIGTERM)")
    parser.add_argument("--polls", type=float, default=500.0, help="status polls a second")
    parser.add_argument("--streams", type=int, default=50, help="live job pages (SSE) held open")
    parser.add_argument("--submitters", type=int, default=50, help="concurrent submitters (alone only)")
    parser.add_argument("--web-workers", type=int, default=2, help="`farm web` processes (alone only)")
    parser.add_argument("--web-threads", type=int, default=32, help="threads per `farm web` process (alone only)")
    parser.add_argument("--rounds", type=int, default=1, help="submissions per submitter; 0: until the end")
    parser.add_argument("--url", help="a running farm's web app (attached)")
    parser.add_argument("--token", help="an API token for it")
    parser.add_argument("--job", help="the job to poll and watch")
    parser.add_argument("--out", help="where the attached run writes its JSON summary")
    args = parser.parse_args()
    if args.url:
        attached(args)
    else:
        standalone(args)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
