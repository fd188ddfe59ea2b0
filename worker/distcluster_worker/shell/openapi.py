"""An OpenAPI 3.1 document built from the same pydantic models the handlers validate with.

Each role describes its endpoints as ``Operation`` values; ``build_openapi`` merges them
with the shell's common ones. Because request and response schemas come from
``model_json_schema``, the document cannot drift from what ``parse_json`` accepts.

pydantic emits nested models under ``$defs`` with refs ``#/$defs/Name``; they are asked for
with ``ref_template="#/components/schemas/{model}"`` and hoisted into
``components/schemas``, so every ``$ref`` in the document resolves. Path parameters are
read from ``{name}`` segments of the path. Every 4xx/5xx answer points at the shared
``Error`` schema, which mirrors ``errors.error_body``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

REF_TEMPLATE = "#/components/schemas/{model}"
_PATH_PARAM_RE = re.compile(r"\{([^}/:]+)(?::[^}]*)?\}")

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Error",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "additionalProperties": True,
        }
    },
}


@dataclass(frozen=True)
class Operation:
    """One endpoint as the OpenAPI document shows it."""

    method: str
    path: str
    summary: str
    request_model: type[BaseModel] | None = None
    response_model: type[BaseModel] | None = None
    responses: dict[int, str] = field(default_factory=dict)


def build_openapi(title: str, version: str, operations: list[Operation]) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``operations``."""
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _operation(op: Operation, schemas: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {"summary": op.summary, "operationId": _operation_id(op)}
    params = _path_parameters(op.path)
    if params:
        doc["parameters"] = params
    if op.request_model is not None:
        doc["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _schema_ref(op.request_model, schemas)}},
        }
    doc["responses"] = _responses(op, schemas)
    return doc


def _responses(op: Operation, schemas: dict[str, Any]) -> dict[str, Any]:
    described = dict(op.responses) or {200: "OK"}
    success = min((s for s in described if 200 <= s < 300), default=None)
    if success is None and op.response_model is not None:
        success = 200
        described[200] = "OK"
    out: dict[str, Any] = {}
    for status in sorted(described):
        answer: dict[str, Any] = {"description": described[status]}
        if status == success and op.response_model is not None:
            schema = _schema_ref(op.response_model, schemas)
            answer["content"] = {"application/json": {"schema": schema}}
        elif status >= 400:
            error_ref = {"$ref": REF_TEMPLATE.format(model="Error")}
            answer["content"] = {"application/json": {"schema": error_ref}}
        out[str(status)] = answer
    return out


def _schema_ref(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, str]:
    """Register ``model`` (and the models it uses) in ``schemas``; return a ref to it."""
    schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    for name, nested in schema.pop("$defs", {}).items():
        schemas.setdefault(name, nested)
    name = model.__name__
    schemas.setdefault(name, schema)
    return {"$ref": REF_TEMPLATE.format(model=name)}


def _path_parameters(path: str) -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM_RE.findall(path)
    ]


def _operation_id(op: Operation) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", op.path).strip("_") or "root"
    return f"{op.method.lower()}_{slug}"
