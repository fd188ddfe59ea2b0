"""JSON on the hot paths, through orjson (several times faster than the stdlib's json).

Every lock request is encoded and decoded several times on its way through a node
(client body, Raft entry, peer messages, Redis log, answer), so this is where a node
spends much of its CPU under load. The functions keep the stdlib's text-based shapes.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def dumps(value: Any) -> str:
    """Compact JSON text; values JSON has no type for are written with `str`."""
    return orjson.dumps(value, default=str).decode()


def dumps_bytes(value: Any) -> bytes:
    """`dumps` as UTF-8 bytes, for a socket or Redis: no round trip through `str`."""
    return orjson.dumps(value, default=str)


def loads(raw: str | bytes) -> Any:
    return orjson.loads(raw)


def json_response(body: Any, *, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body, default=str), status=status, content_type="application/json"
    )
