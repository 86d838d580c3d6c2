"""The API's description served two ways: `/api/openapi.json` for programs (schemathesis, client generators) and
`/api/docs`, the same description rendered on the server as a page for people (the pages' CSP runs no outside
script, so no Swagger UI from a CDN). The description itself lives in `webapp.api.description`."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Response, current_app, render_template
from markupsafe import Markup, escape

from webapp import services
from webapp.api import bp
from webapp.api.description import Schema, describe

METHOD_ORDER = ("get", "post", "put", "patch", "delete")
ERROR_SCHEMA = "#/components/schemas/Error"
CODE_SPAN = re.compile(r"`([^`]+)`")


def description() -> Schema:
    """Built once per app: it depends only on the code and the app's settings."""
    if "farm.openapi" not in current_app.extensions:
        current_app.extensions["farm.openapi"] = describe(services.settings())
    return current_app.extensions["farm.openapi"]


def type_text(schema: Schema) -> str:
    """A schema in a few words for the page: `integer, from 1 to 500`, `array of Job`, `string or null`."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[1]
    if "oneOf" in schema:
        return " or ".join(type_text(s) for s in schema["oneOf"])
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        return " or ".join(type_text({**schema, "type": k}) for k in kind)
    if kind == "array":
        items = schema.get("items", {})
        if "enum" in items:
            return "one or more of " + ", ".join(map(str, items["enum"]))
        return f"array of {type_text(items)}"
    if "format" in schema:
        return "file" if schema["format"] == "binary" else schema["format"]
    if "enum" in schema:
        return "one of " + ", ".join(map(str, schema["enum"]))
    limits = [f"{word} {schema[key]:,}" for key, word in (("minimum", "from"), ("maximum", "to")) if key in schema]
    return ", ".join([kind, " ".join(limits)]) if limits else kind


def shape(schema: Schema) -> str:
    """A response body in a line: `{job: Job}`, `{jobs: array of Job, total: integer, …}`."""
    if "properties" not in schema:
        return type_text(schema)
    return "{" + ", ".join(f"{name}: {type_text(field)}" for name, field in schema["properties"].items()) + "}"


def fields(schema: Schema) -> list[dict[str, Any]]:
    required = set(schema.get("required", []))
    return [
        {"name": name, "type": type_text(field), "required": name in required, "text": field.get("description", "")}
        for name, field in schema.get("properties", {}).items()
    ]


def operation_view(path: str, method: str, described: Schema) -> dict[str, Any]:
    body = described.get("requestBody", {}).get("content", {})
    media_type, content = next(iter(body.items()), (None, {}))
    schema = content.get("schema", {})
    return {
        "id": described["operationId"],
        "method": method.upper(),
        "path": path,
        "summary": described["summary"],
        "text": described.get("description", ""),
        "public": described.get("security") == [],
        "parameters": [
            {
                "name": p["name"],
                "in": p["in"],
                "type": type_text(p["schema"]) + (", comma-separated" if p.get("explode") is False else ""),
                "required": p.get("required", False),
                "text": p.get("description") or p["schema"].get("description", ""),
            }
            for p in described.get("parameters", [])
        ],
        "body": {"media_type": media_type, "fields": fields(schema) or [{"name": "(body)", "type": type_text(schema)}]}
        if media_type
        else None,
        "responses": [
            {
                "status": status,
                "text": answer["description"],
                "types": [
                    f"{media} {shape(c['schema'])}" if "schema" in c else media
                    for media, c in answer.get("content", {}).items()
                ],
            }
            for status, answer in described["responses"].items()
            if not is_error(answer)
        ],
        "errors": [status for status, answer in described["responses"].items() if is_error(answer)],
    }


def is_error(answer: Schema) -> bool:
    """An answer in the contract's error shape: the page lists their statuses once per operation, meanings once."""
    return answer.get("content", {}).get("application/json", {}).get("schema") == {"$ref": ERROR_SCHEMA}


def page_view(spec: Schema) -> dict[str, Any]:
    """The description arranged for the template: operations by tag, then the shared shapes."""
    by_tag = {tag["name"]: {**tag, "operations": []} for tag in spec["tags"]}
    for path, methods in spec["paths"].items():
        for method in (m for m in METHOD_ORDER if m in methods):
            by_tag[methods[method]["tags"][0]]["operations"].append(operation_view(path, method, methods[method]))
    errors = {
        status: answer["description"]
        for methods in spec["paths"].values()
        for described in methods.values()
        for status, answer in described["responses"].items()
        if is_error(answer)
    }
    return {
        "errors": sorted(errors.items()),
        "info": spec["info"],
        "auth_required": bool(spec["security"]),
        "tags": [tag for tag in by_tag.values() if tag["operations"]],
        "schemas": [{"name": name, "fields": fields(s)} for name, s in spec["components"]["schemas"].items()],
    }


@bp.app_template_filter("code_spans")
def code_spans(text: str) -> Markup:
    """The description's `backticks` as <code>, everything else as escaped text."""
    return Markup(CODE_SPAN.sub(lambda m: f"<code>{m.group(1)}</code>", str(escape(text))))


@bp.get("/openapi.json")
def openapi() -> Response:
    """In the order it is written (jsonify would sort the keys), so paths read as they do on the page."""
    return Response(json.dumps(description()), mimetype="application/json")


@bp.get("/docs")
def docs() -> str:
    return render_template("api_docs.html", **page_view(description()))
