"""The OpenAPI document resolves every reference and documents errors."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from distcluster_worker.shell.openapi import Operation, build_openapi


class Holder(BaseModel):
    owner: str


class View(BaseModel):
    holders: list[Holder]


class Query(BaseModel):
    resource: str


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if "$ref" in value else []
        return found + [ref for v in value.values() for ref in _refs(v)]
    if isinstance(value, list):
        return [ref for v in value for ref in _refs(v)]
    return []


def test_nested_models_are_hoisted_and_refs_resolve() -> None:
    doc = build_openapi(
        "t",
        "1",
        [
            Operation("POST", "/view", "View", Query, View, {200: "ok", 409: "conflict"}),
            Operation("GET", "/lock/{resource}", "Lock", None, View, {}),
        ],
    )
    schemas = doc["components"]["schemas"]
    assert {"Holder", "View", "Query", "Error"} <= set(schemas)
    refs = _refs(doc)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas
    assert "$defs" not in str(doc)
    conflict = doc["paths"]["/view"]["post"]["responses"]["409"]
    assert conflict["content"]["application/json"]["schema"]["$ref"].endswith("/Error")
    lock = doc["paths"]["/lock/{resource}"]["get"]
    assert lock["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/View"
    }
    assert lock["operationId"] == "get_lock_resource"
