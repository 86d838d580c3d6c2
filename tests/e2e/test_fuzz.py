"""Every route of the web app, fuzzed with Hypothesis through a live `farm web`: path segments, query strings and
form fields full of huge numbers, NUL and other control characters, unicode, empty and negative values, and files
that are not .blend files. No answer may be a 5xx, and every error under /api is the contract's JSON.

The routes come from the app's own url_map, so a new route is fuzzed without a change here. Nothing is rendered:
the one job the fuzzer can act on is a row in a queue no worker reads, and no file it sends is a .blend, so no
Blender starts. Examples are derandomized (the same ones each run) and bounded: well under a minute on 2 cores.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import RUN_ID
from tests.helpers import csrf_in
from tests.rows import add_job

EXAMPLES = 20  # per route and method
ARGUMENT = re.compile(r"<(?:(\w+)(?:\(([^)]*)\))?:)?(\w+)>")
FIELDS = [  # every name a form or query string of the app reads, besides random ones
    *("frame_start", "frame_end", "chunk_size", "name", "engine", "samples", "resolution_x", "resolution_y"),
    *("resolution_percentage", "output_format", "device", "priority", "main", "upload", "csrf_token"),
    *("status", "q", "limit", "offset", "state", "worker", "job", "page", "partial", "after"),
]
NASTY = [
    *("", " ", "0", "-1", "-0", "+7", "1.5", "1e9", "0x10", "NaN", "9" * 30, "9" * 5000, "-" + "9" * 5000),
    *("\x00", "a\x00b", "\x1b[2J", "\x7f", "\u0085", "\u202eevil", "²", "٣", "𝟗", "😀" * 50, "%00", "%", "_"),
    *("../../etc/passwd", "CYCLES", "PNG", "GPU", "FAILED,CANCELED", "x" * 3000, "<script>alert(1)</script>"),
]
FILES = [b"", b"hello", b"\x89PNG\r\n\x1a\n" + bytes(64), b"PK\x03\x04" + bytes(40), b"BLEND" + bytes(10)]

texts = st.one_of(
    st.sampled_from(NASTY),
    st.text(max_size=30),
    st.integers(-(10**30), 10**30).map(str),
    st.binary(max_size=8).map(lambda b: b.decode("latin-1")),
)
pairs = st.lists(st.tuples(st.one_of(st.sampled_from(FIELDS), st.text(min_size=1, max_size=8)), texts), max_size=6)


def segment(converter: str | None, args: str | None, job_id: str) -> st.SearchStrategy[str]:
    """Values for one path argument: what its converter expects, the fuzzer's job, or anything at all."""
    if converter == "int":
        return st.one_of(st.integers(0, 10**12).map(str), texts)
    if converter == "any":
        return st.one_of(st.sampled_from([a.strip() for a in (args or "").split(",")]), texts)
    return st.one_of(st.just(job_id), texts)


def requests_for(rule: str, method: str, job_id: str) -> st.SearchStrategy[dict[str, Any]]:
    arguments = {name: segment(conv, args, job_id) for conv, args, name in ARGUMENT.findall(rule)}
    return st.fixed_dictionaries(
        {
            "path": st.fixed_dictionaries(arguments),
            "query": pairs,
            "form": pairs if method != "GET" else st.just([]),
            "file": st.none() | st.sampled_from(FILES) if method != "GET" else st.none(),
            "csrf": st.booleans(),
        }
    )


def url_of(rule: str, values: dict[str, str]) -> str:
    return ARGUMENT.sub(lambda m: quote(values[m.group(3)], safe=""), rule)


def check(response: requests.Response, what: str) -> None:
    assert response.status_code < 500, f"{what} → {response.status_code}: {response.text[:500]}"
    if response.status_code >= 400 and what.split()[1].startswith("/api"):
        assert response.headers.get("Content-Type", "").startswith("application/json"), what
        error = response.json()["error"]
        assert set(error) == {"code", "message", "field"} and error["code"] and error["message"], what


@pytest.fixture(scope="module")
def fuzz_job(shared_database) -> str:
    """The job the fuzzer may cancel and retry: its tasks go to a queue of this run that no worker reads."""
    with shared_database.session() as session:
        return add_job(session, 4, 2, name="fuzz", queue=f"fuzz-{RUN_ID}")


def fuzz_route(browser: requests.Session, base_url: str, token: str, rule: str, method: str, job_id: str) -> None:
    """EXAMPLES requests to one route with one method; each must pass `check`."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(request=requests_for(rule, method, job_id))
    def fuzz(request: dict[str, Any]) -> None:
        path = url_of(rule, request["path"])
        query = urlencode(request["query"], quote_via=quote)
        files = {"file": ("upload.blend", request["file"])} if request["file"] is not None else None
        response = browser.request(
            method,
            f"{base_url}{path}" + (f"?{query}" if query else ""),
            data=request["form"] or None,
            files=files,
            headers={"X-CSRF-Token": token} if request["csrf"] else {},
            allow_redirects=False,
            timeout=60,
        )
        check(response, f"{method} {path}?{query[:300]} form={request['form']!r:.300}")

    fuzz()


def test_no_input_makes_a_5xx_on_any_route(app, farm, fuzz_job):
    browser = requests.Session()
    browser.headers["Authorization"] = f"Bearer {farm.admin_token}"  # past the sign-in, to reach every view
    token = csrf_in(browser.get(f"{farm.url}/jobs/new", timeout=30).text)  # page forms get past the token too
    routes = [
        (rule.rule, method)
        for rule in app.url_map.iter_rules()
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
    ]
    assert len(routes) > 25 and ("/api/jobs/<job_id>/frames/<int:frame>", "GET") in routes
    for rule, method in routes:
        fuzz_route(browser, farm.url, token, rule, method, fuzz_job)
