"""One node as a real OS process: ``python -m distcluster_worker.cli node`` with an env.

Integration tests break nodes for real through this class: SIGTERM (graceful), SIGKILL
(crash), SIGSTOP/SIGCONT (a node that hangs, then wakes up with stale beliefs). The child
runs in its own session so that a Ctrl-C in the terminal reaches only the parent, which
then stops its children in order.

Output goes to ``log_path`` when given; with ``prefix_output`` each line is copied to our
stdout as ``[node_id] line`` by a reader thread (what ``distcluster up`` shows); otherwise
the child inherits our stdout/stderr (pytest captures them at the fd level).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO

_POLL_S = 0.1
OUTPUT_LOCK = threading.Lock()


class NodeProcess:
    """A ``distcluster node`` child process; restartable with ``start()`` after a stop."""

    def __init__(
        self,
        node_id: str,
        env: Mapping[str, str],
        *,
        log_path: Path | None = None,
        prefix_output: bool = False,
    ) -> None:
        self.node_id = node_id
        self.env = dict(env)
        self.log_path = log_path
        self.prefix_output = prefix_output
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._terminated = False

    def command(self) -> list[str]:
        return [sys.executable, "-m", "distcluster_worker.cli", "node"]

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def start(self) -> None:
        """Start the process (no-op if it is running)."""
        if self.alive:
            return
        self._close_output()
        self._terminated = False
        stdout: int | IO[bytes] | None = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")  # Closed in _close_output().
            stdout = self._log
        elif self.prefix_output:
            stdout = subprocess.PIPE
        self._proc = subprocess.Popen(
            self.command(),
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout is not None else None,
            start_new_session=True,
        )
        if self._proc.stdout is not None:
            self._reader = threading.Thread(
                target=_copy_prefixed,
                args=(self._proc.stdout, f"[{self.node_id}] "),
                name=f"output-{self.node_id}",
                daemon=True,
            )
            self._reader.start()

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        """Send SIGTERM once (and SIGCONT, should it be paused) without waiting."""
        if self._terminated:
            return
        self._terminated = True
        self._signal(signal.SIGTERM)
        self._signal(signal.SIGCONT)  # A paused process would never see the SIGTERM.

    def stop(self, timeout_s: float = 10) -> None:
        """SIGTERM (graceful shutdown), then SIGKILL after ``timeout_s``; waits for exit."""
        if self._proc is None:
            return
        self.terminate()
        try:
            self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._close_output()

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up; waits for exit."""
        if self._proc is None:
            return
        self._signal(signal.SIGKILL)
        self._proc.wait()
        self._close_output()

    def pause(self) -> None:
        """SIGSTOP: the process hangs, its sockets stay open."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT: a paused process runs again."""
        self._signal(signal.SIGCONT)

    def _close_output(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=2)
            self._reader = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def wait_healthy(self, base_url: str, timeout_s: float = 15) -> None:
        """Poll ``GET /health`` until it answers 200; fail early if the process exits."""
        deadline = time.monotonic() + timeout_s
        url = base_url.rstrip("/") + "/health"
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(
                    f"{self.node_id} exited with code {self._proc.returncode} "
                    f"before becoming healthy{self._log_hint()}"
                )
            if http_ok(url):
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.node_id}: {url} not healthy after {timeout_s} s")
            time.sleep(_POLL_S)

    def _log_hint(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        tail = self.log_path.read_text(errors="replace")[-2000:]
        return f"; log tail ({self.log_path}):\n{tail}"


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    """True when GET ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _copy_prefixed(stream: IO[bytes], prefix: str) -> None:
    """Copy each line of ``stream`` to our stdout with ``prefix``, until EOF."""
    with stream:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            with OUTPUT_LOCK:
                sys.stdout.write(prefix + line + "\n")
                sys.stdout.flush()
