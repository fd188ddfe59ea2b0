"""Every failure leaves the node as the JSON error shape, and the node keeps serving."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from distcluster_worker.shell.errors import ApiError, error_response

Client = TestClient[Any, Any]


async def _error(response: Any) -> dict[str, Any]:
    body = await response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    return error


async def test_valid_body_is_parsed(client: Client) -> None:
    response = await client.post("/echo", json={"name": "a", "count": 2})
    assert response.status == 200
    assert await response.json() == {"name": "a", "count": 2}


async def test_not_json_is_bad_json(client: Client) -> None:
    response = await client.post("/echo", data=b"{not json")
    assert response.status == 400
    assert (await _error(response))["code"] == "bad_json"


async def test_json_that_is_not_an_object_is_bad_json(client: Client) -> None:
    for raw in (b"[1, 2]", b'"text"', b"null", b"NaN", b"\xff\xfe"):
        response = await client.post("/echo", data=raw)
        assert response.status == 400, raw
        assert (await _error(response))["code"] == "bad_json"


async def test_validation_errors_list_fields(client: Client) -> None:
    response = await client.post("/echo", json={"count": "many", "extra": 1, "inner": {}})
    assert response.status == 400
    error = await _error(response)
    assert error["code"] == "bad_request"
    fields = {detail["field"] for detail in error["details"]}
    assert fields == {"name", "count", "extra", "inner.depth"}
    assert all(detail["message"] for detail in error["details"])


async def test_unknown_route_is_not_found(client: Client) -> None:
    response = await client.get("/nope")
    assert response.status == 404
    assert (await _error(response))["code"] == "not_found"


async def test_wrong_method_is_method_not_allowed(client: Client) -> None:
    response = await client.get("/echo")
    assert response.status == 405
    assert (await _error(response))["code"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


async def test_oversized_body_is_too_large(make_node: Callable[..., Any]) -> None:
    node = make_node(max_body_bytes=100)
    server = TestServer(node.build_app())
    client: Client
    async with server, TestClient(server) as client:
        response = await client.post("/echo", json={"name": "x" * 500})
        assert response.status == 413
        assert (await _error(response))["code"] == "too_large"
        response = await client.post("/echo", json={"name": "ok"})
        assert response.status == 200


async def test_oversized_chunked_body_is_too_large(make_node: Callable[..., Any]) -> None:
    node = make_node(max_body_bytes=100)

    async def chunks() -> Any:
        for _ in range(10):
            yield b"x" * 50

    server = TestServer(node.build_app())
    client: Client
    async with server, TestClient(server) as client:
        response = await client.post("/echo", data=chunks())
        assert response.status == 413
        assert (await _error(response))["code"] == "too_large"


async def test_handler_exception_is_internal_and_node_keeps_serving(client: Client) -> None:
    for _ in range(3):
        response = await client.get("/boom")
        assert response.status == 500
        error = await _error(response)
        assert error["code"] == "internal"
        assert "handler bug" not in error["message"]
    assert (await client.get("/health")).status == 200


async def test_api_error_carries_extra_fields(client: Client) -> None:
    response = await client.get("/conflict")
    assert response.status == 409
    assert await _error(response) == {
        "code": "deadlock",
        "message": "a cycle of owners",
        "cycle": ["a", "b", "a"],
    }


def test_api_error_accepts_extra_as_mapping_or_keywords() -> None:
    error = ApiError(423, "locked", "held", {"holders": ["a"]}, waited_ms=5)
    assert error.extra == {"holders": ["a"], "waited_ms": 5}
    assert (error.status, error.code, error.message) == (423, "locked", "held")


def test_error_response_shape() -> None:
    response = error_response(503, "unavailable", "no quorum", leader=None)
    assert response.status == 503
    assert response.content_type == "application/json"
    assert response.text == (
        '{"error": {"code": "unavailable", "message": "no quorum", "leader": null}}'
    )
