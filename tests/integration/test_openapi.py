"""The API's description stays true to the app: every Flask route under /api is described with its methods, nothing
described is missing from the app, the document is valid OpenAPI 3.1, and /api/docs shows every operation."""

from __future__ import annotations

import re

import schemathesis
from jsonschema import Draft202012Validator

RULE_ARGUMENT = re.compile(r"<(?:\w+(?:\([^)]*\))?:)?(\w+)>")
IGNORED_METHODS = {"HEAD", "OPTIONS"}  # Flask answers these on every route by itself


def flask_operations(app) -> dict[tuple[str, str], str]:  # type: ignore[no-untyped-def]
    """(OpenAPI path, method) → endpoint, for every route of the app (`<int:frame>` spelled `{frame}`)."""
    found = {}
    for rule in app.url_map.iter_rules():
        path = RULE_ARGUMENT.sub(r"{\1}", rule.rule)
        for method in (rule.methods or set()) - IGNORED_METHODS:
            found[(path, method.lower())] = rule.endpoint
    return found


def under_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def described_operations(spec: dict) -> dict[tuple[str, str], str]:  # type: ignore[type-arg]
    return {
        (path, method): operation["operationId"]
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    }


def test_every_api_route_is_described_and_every_description_is_a_route(app, client):
    """Every route under /api must be described; a route elsewhere (such as /metrics) may be, and then it must
    exist with the methods described."""
    spec = client.get("/api/openapi.json").get_json()
    routes, described = flask_operations(app), described_operations(spec)
    api_routes = {key: endpoint for key, endpoint in routes.items() if under_api(key[0])}
    assert len(api_routes) >= 20, api_routes  # the walk found the API, not an empty map
    assert sorted(set(api_routes) - set(described)) == [], "routes missing from webapp/api/description.py"
    assert sorted(set(described) - set(routes)) == [], "described in webapp/api/description.py but not routes"
    # the operationId is the Flask view's name, so the page's anchors and a client's method names follow the code
    assert {key: routes[key].rpartition(".")[2] for key in described} == described


def test_the_description_is_valid_openapi_3_1(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    spec = response.get_json()
    assert spec["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(spec).validate()  # against the OpenAPI 3.1 meta-schema
    for schema in spec["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    error = spec["components"]["schemas"]["Error"]
    assert error["properties"]["error"]["required"] == ["code", "message", "field"]  # the contract's error shape
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            refusals = {s: r for s, r in operation["responses"].items() if s.startswith("4")}
            assert "4XX" in refusals and "400" in refusals, (method, path)
            for status, answer in refusals.items():
                assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, (
                    method,
                    path,
                    status,
                )


def test_the_limits_described_are_this_farms(app, client):
    form = client.get("/api/openapi.json").get_json()["paths"]["/api/jobs"]["post"]["requestBody"]
    fields = form["content"]["multipart/form-data"]["schema"]["properties"]
    settings = app.extensions["farm"]
    assert fields["samples"]["maximum"] == settings.max_samples
    assert fields["chunk_size"]["maximum"] == settings.max_frames
    assert f"{settings.max_upload_bytes // 2**20:,} MiB" in fields["file"]["description"]


def test_the_docs_page_shows_every_operation_and_the_header_links_to_it(client):
    spec = client.get("/api/openapi.json").get_json()
    page = client.get("/api/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    for (path, method), name in described_operations(spec).items():
        assert f'id="{name}"' in html and f"<code>{path}</code>" in html, (method, path)
    for name in spec["components"]["schemas"]:
        assert f'id="schema-{name}"' in html
    assert 'href="/api/docs" aria-current="page">API</a>' in html
    assert 'href="/api/docs">API</a>' in client.get("/").get_data(as_text=True)  # every page's header has it
