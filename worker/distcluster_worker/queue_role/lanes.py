"""Redis connections of the queue's hot path, used without the client's pool machinery.

Why: every message costs a queue node two or three Redis commands (publish, consume,
ack), and through ``redis.asyncio.Redis.execute_command`` each command costs the node
about 100 µs of CPU on top of what the socket needs (pool lock, a check that the socket
has no stray data, retry wrappers, observability hooks), measured at four times the cost
of sending the same command on a ``Connection`` directly. On a busy node that overhead
was a third of its CPU, and CPU is what end-to-end latency waits for. So the queue keeps
a free list of ``redis.asyncio`` connections, made with the node client's own settings
(URL, timeouts, protocol), and runs one command per borrowed connection.

Rules that keep this as safe as the pool:

* A connection goes back to the free list only after its reply was read in full (a
  normal reply or an error reply). Any other exit (cancellation, timeout, I/O error) may
  leave a reply unread that the next command would take for its own, so the connection
  is disconnected instead.
* A connection error (Redis restarted, or the socket was closed) drops every idle
  connection too, since they are likely stale as well, and the command is tried once more
  on a fresh connection, as the client's own retry would. At-least-once delivery allows
  the rare duplicate a retried ``XADD`` may make; idempotent publishes are protected by
  their key. A timeout is not retried: it already took the full socket timeout.
* Scripts run with ``EVALSHA``; after a Redis restart (``NOSCRIPT``) the same call falls
  back to ``EVAL``, which loads the script again.
* A command, send and reply, is bounded by the client's socket timeout in one
  ``asyncio.timeout``; the connections themselves carry none (see ``shell.redis_conns``:
  redis-py's per-call timeouts cost a task per send on Python 3.11).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from distcluster_worker.shell.redis_conns import unbounded_connection_settings

Arg = str | int | bytes

#: Idle connections kept; more are opened under load and closed when returned.
MAX_IDLE = 64


class LuaScript:
    """A script's text and its SHA1, as Redis names it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


class Lanes:
    """Run single commands on connections of our own (see the module docstring)."""

    def __init__(self, pool: ConnectionPool, max_idle: int = MAX_IDLE) -> None:
        self._pool = pool
        self._connection_kwargs, self._timeout_s = unbounded_connection_settings(pool)
        self._idle: list[AbstractConnection] = []
        self._max_idle = max_idle
        self._closed = False

    async def execute(self, *args: Arg) -> Any:
        """The raw reply of one command; an error reply raises ``ResponseError``."""
        try:
            return await self._once(args)
        except RedisConnectionError:
            await self._drop_idle()
            return await self._once(args)

    async def script(self, script: LuaScript, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.execute("EVAL", script.source, len(keys), *keys, *args)

    async def close(self) -> None:
        self._closed = True
        await self._drop_idle()

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def _once(self, args: Sequence[Arg]) -> Any:
        conn = self._idle.pop() if self._idle else self._new_connection()
        try:
            async with asyncio.timeout(self._timeout_s):
                await conn.send_packed_command(conn.pack_command(*args), check_health=False)
                reply = await conn.read_response()
        except ResponseError:
            await self._put_back(conn)  # an error reply, read whole: the socket is clean
            raise
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        await self._put_back(conn)
        return reply

    def _new_connection(self) -> AbstractConnection:
        conn: AbstractConnection = self._pool.connection_class(**self._connection_kwargs)
        return conn

    async def _put_back(self, conn: AbstractConnection) -> None:
        if self._closed or len(self._idle) >= self._max_idle:
            await conn.disconnect(nowait=True)
        else:
            self._idle.append(conn)

    async def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.disconnect(nowait=True)
