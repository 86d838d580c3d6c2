"""Schemathesis against a live `farm web` (production mode: Postgres, Redis, S3 on moto): cases generated from the
description at /api/openapi.json, valid and invalid, for every operation. Every answer must match what the
description says (status, content type, headers, body schema) and none may be a 5xx.

The farm has jobs and a worker to act on (rows, no Blender: the jobs' queue has no worker, and no file the generator
sends is a .blend), and valid cases name them as often as made-up ones, so reads, frames, logs, cancel, retry and the
worker switches answer their 2xx, 302 and 409s too, not only 404. Examples are derandomized and bounded.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance
from sqlalchemy import update

from farm.config import load_settings
from farm.models import Chunk, Worker
from tests.conftest import RUN_ID
from tests.helpers import HTTP, FarmProcesses
from tests.rows import add_job, claim_first_chunk, render_frame
from webapp.api.description import describe

pytestmark = pytest.mark.slow
EXAMPLES = 12  # per operation, valid and invalid: the whole run stays near a minute on 2 cores
WORKER = f"api-{RUN_ID}@test"
# Operations whose valid requests depend on what no schema can say (the bytes are a .blend; they hash to the URL's
# sha256): a schema-valid request may rightly be refused there, so that one check does not apply.
CONTENT_CHECKED = {("post", "/api/jobs"), ("put", "/api/files/{sha256}")}
OPERATIONS = [  # which operations there are (labels only: the cases come from what the live farm serves)
    (method, path)
    for path, methods in describe(load_settings({}, dotenv_path=None))["paths"].items()
    for method in methods
]


@pytest.fixture(scope="module")
def api_farm(prod_env, shared_database, tmp_path_factory) -> Iterator[FarmProcesses]:  # type: ignore[no-untyped-def]
    """`farm web` alone, on a queue of its own: nothing the generated cases queue is ever rendered."""
    queue = f"{prod_env['FARM_QUEUE']}-api-{uuid.uuid4().hex[:8]}"
    procs = FarmProcesses(dict(prod_env, FARM_QUEUE=queue), tmp_path_factory.mktemp("api-logs"))
    procs.start_web()
    yield procs
    procs.stop_all()


@pytest.fixture(scope="module")
def known(shared_database) -> dict[str, list[object]]:  # type: ignore[no-untyped-def]
    """The objects generated cases may name besides made-up ones: a queued job, a job rendering on a worker with
    frame 1 done and chunk 0's log named, and that worker."""
    queue = f"api-{RUN_ID}"
    with shared_database.session() as session:
        queued = add_job(session, 4, 2, name="schemathesis", queue=queue)
        rendering = add_job(session, 2, 2, name="schemathesis-rendering", queue=queue)
        session.add(Worker(hostname=WORKER, devices=["CPU"], queues=[queue]))
    claim_first_chunk(shared_database, rendering, WORKER)
    render_frame(shared_database, rendering, 1, WORKER)
    with shared_database.session() as session:  # the log a worker names as it starts, not uploaded yet
        session.execute(update(Chunk).where(Chunk.job_id == rendering).values(log_key=f"logs/{rendering}/0.log"))
    return {"job_id": [queued, rendering], "hostname": [WORKER], "frame": [1], "index": [0]}


@pytest.fixture(scope="module")
def api_schema(api_farm: FarmProcesses):  # type: ignore[no-untyped-def]
    """The description as the live farm serves it."""
    schema = schemathesis.openapi.from_url(f"{api_farm.url}/api/openapi.json", headers=signed_in(api_farm))
    schema.config.update(base_url=api_farm.url)
    # The token goes on every call (signed_in); negative cases must not count a request as bad for lacking it.
    schema.config.generation.update(with_security_parameters=False)
    return schema


def signed_in(farm: FarmProcesses) -> dict[str, str]:
    """The farm's own admin, so every operation is tried past the sign-in (schemathesis' `ignored_auth` check also
    sends a bad token and expects 401)."""
    return {"Authorization": f"Bearer {farm.admin_token}"}


def cases(operation, path: str, known: dict[str, list[object]]) -> st.SearchStrategy:  # type: ignore[no-untyped-def]
    """Valid and invalid cases, and valid ones naming the farm's own objects (each combination of them)."""
    names = [name for name in known if f"{{{name}}}" in path]
    modes = [operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)]
    for values in itertools.product(*(known[name] for name in names)) if names else []:
        modes.append(
            operation.as_strategy(GenerationMode.POSITIVE, path_parameters=dict(zip(names, values, strict=True)))
        )
    return st.one_of(modes)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m.upper()} {p}" for m, p in OPERATIONS])
def test_every_answer_matches_the_description_and_none_is_a_5xx(api_farm, api_schema, known, method: str, path: str):  # type: ignore[no-untyped-def]
    operation = api_schema[path][method]
    excluded = [positive_data_acceptance] if (method, path) in CONTENT_CHECKED else []

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases(operation, path, known))
    def answer_as_described(case) -> None:  # type: ignore[no-untyped-def]
        case.call_and_validate(headers=signed_in(api_farm), timeout=60, allow_redirects=False, excluded_checks=excluded)

    answer_as_described()


def test_a_method_a_path_does_not_have_is_405_naming_those_it_has(api_farm, api_schema):  # type: ignore[no-untyped-def]
    """The methods described are the methods served: any other is refused with the contract's JSON error and an
    Allow header (HTTP requires one) listing exactly the described ones (of every path the URL matches:
    `/api/files/check` is also a `/api/files/{sha256}`)."""
    described = api_schema.raw_schema["paths"]
    templates = {path: re.compile(re.sub(r"\\{\w+\\}", "[^/]+", re.escape(path)) + "$") for path in described}
    for path in described:
        url = path.format(job_id=uuid.uuid4(), hostname="h", sha256="0" * 64, frame=1, index=0)
        methods = {m for other, pattern in templates.items() if pattern.match(url) for m in described[other]}
        for method in sorted({"get", "post", "put", "delete", "patch"} - methods):
            response = HTTP.request(method, api_farm.url + url, headers=signed_in(api_farm), timeout=30)
            assert response.status_code == 405, (method, url, response.status_code)
            assert response.json()["error"]["code"] == "method_not_allowed"
            allowed = {m.strip().lower() for m in response.headers["Allow"].split(",")}
            assert allowed - {"head", "options"} == methods, (url, allowed)
