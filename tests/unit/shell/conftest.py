"""Fixtures for the shell tests: a tiny role on top of BaseNode, served by aiohttp's test server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel, ConfigDict

from distcluster_worker.shell.config import Settings, load_settings
from distcluster_worker.shell.errors import ApiError, parse_json
from distcluster_worker.shell.node import BaseNode
from distcluster_worker.shell.openapi import Operation


class Inner(BaseModel):
    depth: int


class EchoIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    count: int = 1
    inner: Inner | None = None


class EchoOut(BaseModel):
    name: str
    count: int


class EchoNode(BaseNode):
    """A role with one endpoint of each kind the error middleware must handle."""

    role: ClassVar[str] = "echo"

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self.ready_reason: str | None = None
        self.started_hooks: list[str] = []
        self.slow_started = asyncio.Event()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/echo", self.echo),
            web.get("/boom", self.boom),
            web.get("/conflict", self.conflict),
            web.get("/items/{name}", self.item),
            web.get("/slow", self.slow),
        ]

    def operations(self) -> list[Operation]:
        return [
            Operation("POST", "/echo", "Echo", EchoIn, EchoOut, {200: "echoed", 400: "bad"}),
            Operation("get", "/items/{name}", "One item", None, EchoOut, {404: "missing"}),
        ]

    def readiness(self) -> tuple[bool, str]:
        if self.ready_reason is not None:
            return False, self.ready_reason
        return True, "ok"

    def role_state(self) -> dict[str, Any]:
        return {"answer": 42}

    async def on_start(self) -> None:
        self.started_hooks.append("start")

    async def on_stop(self) -> None:
        self.started_hooks.append("stop")

    async def echo(self, request: web.Request) -> web.Response:
        body = await parse_json(request, EchoIn)
        return web.json_response(EchoOut(name=body.name, count=body.count).model_dump())

    async def boom(self, request: web.Request) -> web.Response:
        raise RuntimeError("handler bug")

    async def conflict(self, request: web.Request) -> web.Response:
        raise ApiError(409, "deadlock", "a cycle of owners", cycle=["a", "b", "a"])

    async def item(self, request: web.Request) -> web.Response:
        return web.json_response({"name": request.match_info["name"], "count": 1})

    async def slow(self, request: web.Request) -> web.Response:
        self.slow_started.set()
        await asyncio.sleep(0.3)
        return web.json_response({"slow": True})


def settings_for(**values: Any) -> Settings:
    """Settings from keyword values, as the environment would give them."""
    return load_settings({key.upper(): str(value) for key, value in values.items()})


@pytest.fixture
def make_node() -> Callable[..., EchoNode]:
    def make(clock: Callable[[], float] | None = None, **values: Any) -> EchoNode:
        values.setdefault("node_id", "node1")
        values.setdefault("peers", "node1=127.0.0.1:8001,node2=127.0.0.1:8002")
        return EchoNode(settings_for(**values), clock=clock)

    return make


@pytest.fixture
def node(make_node: Callable[..., EchoNode]) -> EchoNode:
    return make_node(clock=lambda: 1_000.0)


@pytest.fixture
async def client(node: EchoNode) -> AsyncIterator[TestClient[Any, Any]]:
    server = TestServer(node.build_app())
    test_client: TestClient[Any, Any]
    async with server, TestClient(server) as test_client:
        yield test_client
