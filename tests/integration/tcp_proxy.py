"""A TCP proxy for integration tests that can cut, blackhole and delay one link.

Each proxy forwards one *directed* link (node A dialing node B), so partitions can be
asymmetric: cutting A->B leaves B->A alone. The proxy runs its own asyncio loop in a
daemon thread, so synchronous tests, asynchronous tests (whose loop it never blocks for
long) and benchmarks all drive it through the same plain methods.

Modes, as a real network would show them:
- `cut()` closes every open connection and resets new ones at once (a refused peer:
  the client fails fast);
- `cut(blackhole=True)` closes every open connection and accepts new ones but never
  forwards a byte (a dropped route: the client waits for its own timeout);
- `delay(ms)` holds every chunk `ms` milliseconds in both directions, keeping order;
- `heal()` forwards again (it does not undo a delay; `delay(0)` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

_CHUNK_BYTES = 65536
_CONTROL_TIMEOUT_S = 5.0


@dataclass
class ProxyStats:
    """Counters a test can read to prove traffic really went through the proxy."""

    accepted: int = 0
    refused: int = 0
    blackholed: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


class TcpProxy:
    """Forward 127.0.0.1:`port` to `target_host`:`target_port` under test control."""

    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self.port = 0
        self.stats = ProxyStats()
        self._state = "open"  # "open" | "reset" | "blackhole"
        self._delay_s = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    # -- lifecycle -----------------------------------------------------------------

    @property
    def address(self) -> str:
        """`host:port` that clients dial instead of the target."""
        return f"{self.listen_host}:{self.port}"

    @property
    def state(self) -> str:
        return self._state

    def start(self) -> TcpProxy:
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run_loop, args=(loop, ready), name=f"tcp-proxy-{self.target_port}"
        )
        self._thread.daemon = True
        self._thread.start()
        ready.wait(_CONTROL_TIMEOUT_S)
        self._call(self._listen())
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_CONTROL_TIMEOUT_S)
        if not thread.is_alive():
            loop.close()
        self._loop = None
        self._thread = None

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- controls (callable from any thread) ---------------------------------------

    def cut(self, blackhole: bool = False) -> None:
        """Drop every open connection; refuse (or silently hold) the next ones."""
        self._call(self._set_state("blackhole" if blackhole else "reset"))

    def heal(self) -> None:
        """Forward again; connections held by a blackhole are closed so clients redial."""
        self._call(self._set_state("open"))

    def delay(self, ms: float) -> None:
        """Hold every forwarded chunk `ms` milliseconds (0 removes the delay)."""
        if ms < 0:
            raise ValueError(f"delay must be >= 0 ms, got {ms}")
        self._delay_s = ms / 1000.0

    # -- loop side -----------------------------------------------------------------

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("proxy is not running")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(_CONTROL_TIMEOUT_S)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._on_client, self.listen_host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._drop_all()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _set_state(self, state: str) -> None:
        previous, self._state = self._state, state
        if state != "open" or previous == "blackhole":
            await self._drop_all()

    async def _drop_all(self) -> None:
        for writer in list(self._writers):
            _abort(writer)
        tasks = list(self._conns)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None:
            return
        self._conns.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (asyncio.CancelledError, ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            self._conns.discard(task)
            _abort(writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._state == "reset":
            self.stats.refused += 1
            return
        if self._state == "blackhole":
            self.stats.blackholed += 1
            await _discard(reader)
            return
        up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        self._writers.add(up_writer)
        self.stats.accepted += 1
        try:
            await _first_done(
                self._pump(reader, up_writer, upstream=True),
                self._pump(up_reader, writer, upstream=False),
            )
        finally:
            self._writers.discard(up_writer)
            _abort(up_writer)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool
    ) -> None:
        """Copy one direction; delayed chunks go through a queue to keep their order."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(_send_delayed(queue, writer))
        loop = asyncio.get_running_loop()
        try:
            while chunk := await reader.read(_CHUNK_BYTES):
                self._count(len(chunk), upstream)
                queue.put_nowait((loop.time() + self._delay_s, chunk))
            queue.put_nowait((loop.time() + self._delay_s, b""))
            await sender
        finally:
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender

    def _count(self, size: int, upstream: bool) -> None:
        if upstream:
            self.stats.bytes_up += size
        else:
            self.stats.bytes_down += size


async def _send_delayed(
    queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
) -> None:
    """Write chunks once due; an empty chunk means end of stream (half-close)."""
    loop = asyncio.get_running_loop()
    while True:
        due, chunk = await queue.get()
        wait_s = due - loop.time()
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        if not chunk:
            if writer.can_write_eof():
                writer.write_eof()
            return
        writer.write(chunk)
        await writer.drain()


async def _first_done(*coros: Coroutine[Any, Any, None]) -> None:
    """Run both directions; stop when both ended or either failed."""
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        pending: set[asyncio.Task[None]] = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(t.exception() is not None for t in done if not t.cancelled()):
                return
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _discard(reader: asyncio.StreamReader) -> None:
    while await reader.read(_CHUNK_BYTES):
        pass


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()
