"""BaseNode's common endpoints, metrics, OpenAPI document and life cycle."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from distcluster_worker.runner.cluster import free_port
from distcluster_worker.shell.node import BaseNode

Client = TestClient[Any, Any]


async def test_health(client: Client, node: Any) -> None:
    node.started_at = 990.0  # The injected clock says 1000 s.
    response = await client.get("/health")
    assert response.status == 200
    assert await response.json() == {
        "status": "ok",
        "node_id": "node1",
        "role": "echo",
        "pid": os.getpid(),
        "uptime_s": 10.0,
    }


async def test_now_ms_reads_the_injected_clock(make_node: Callable[..., Any]) -> None:
    now = [12.5]
    node = make_node(clock=lambda: now[0])
    assert node.now_ms() == 12_500
    now[0] = 13.0
    assert node.now_ms() == 13_000


async def test_ready_follows_the_role(client: Client, node: Any) -> None:
    response = await client.get("/ready")
    assert response.status == 200
    assert await response.json() == {"ready": True}
    node.ready_reason = "no leader yet"
    response = await client.get("/ready")
    assert response.status == 503
    assert await response.json() == {"error": {"code": "not_ready", "message": "no leader yet"}}


async def test_cluster_shows_peers_without_self(client: Client) -> None:
    response = await client.get("/cluster")
    assert await response.json() == {
        "node_id": "node1",
        "role": "echo",
        "peers": {"node2": "http://127.0.0.1:8002"},
        "state": {"answer": 42},
    }


async def test_metrics_count_requests_by_route_template(client: Client) -> None:
    for name in ("a", "b", "c"):
        assert (await client.get(f"/items/{name}")).status == 200
    await client.get("/nope")
    await client.get("/boom")
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert (
        'distcluster_http_requests_total{method="GET",route="/items/{name}",status="200"} 3.0'
        in text
    )
    assert 'route="unmatched",status="404"' in text
    assert 'route="/boom",status="500"' in text
    assert "/items/a" not in text
    assert "distcluster_http_request_duration_seconds_bucket" in text
    assert 'distcluster_node_info{node_id="node1",role="echo"} 1.0' in text


async def test_openapi_lists_common_and_role_operations(client: Client) -> None:
    doc = await (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    for path in ("/health", "/ready", "/metrics", "/cluster", "/openapi.json", "/echo"):
        assert path in doc["paths"]
    echo = doc["paths"]["/echo"]["post"]
    assert echo["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EchoIn"
    }
    item = doc["paths"]["/items/{name}"]["get"]
    assert item["parameters"][0]["name"] == "name"


async def test_start_serves_and_stop_drains_in_flight_requests(
    make_node: Callable[..., Any],
) -> None:
    port = free_port()
    node = make_node(port=port, shutdown_grace_ms=2000)
    await node.start()
    assert node.started_hooks == ["start"]
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/health") as response:
            assert response.status == 200
        slow = asyncio.create_task(session.get(url + "/slow"))
        await node.slow_started.wait()
        await node.stop()
        response = await slow
        assert response.status == 200
        assert await response.json() == {"slow": True}
        response.release()
    assert node.started_hooks == ["start", "stop"]
    await node.stop()  # Idempotent.
    assert node.started_hooks == ["start", "stop"]


async def test_serve_forever_returns_after_request_stop(make_node: Callable[..., Any]) -> None:
    node = make_node(port=free_port())
    task = asyncio.create_task(node.serve_forever())
    while node._runner is None:
        await asyncio.sleep(0.01)
    node.request_stop()
    await asyncio.wait_for(task, 5)
    assert node.started_hooks == ["start", "stop"]


async def test_clients_exist_only_after_start(make_node: Callable[..., Any]) -> None:
    node: BaseNode = make_node()
    for name in ("rpc", "redis"):
        try:
            getattr(node, name)
        except RuntimeError as exc:
            assert "start" in str(exc)
        else:
            raise AssertionError(f"{name} before start")


def test_base_node_defaults(make_node: Callable[..., Any]) -> None:
    node = BaseNode(make_node().settings)
    assert node.routes() == [] and node.operations() == []
    assert node.readiness() == (True, "ok")
    assert node.role_state() == {}
