"""The ``distcluster`` command: refusals happen before anything starts."""

from __future__ import annotations

import http.server
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from distcluster_worker import cli, roles
from distcluster_worker.roles import RoleNotAvailable, node_class
from distcluster_worker.runner.cluster import free_port, port_is_free


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == "distcluster 0.1.0"


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage: distcluster" in capsys.readouterr().out


def test_node_with_bad_configuration(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PORT", "abc")
    monkeypatch.setenv("RPC_RETRIES", "99")
    assert cli.main(["node"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("distcluster: invalid configuration:\n  ")
    assert "  PORT: must be an integer between 1 and 65535, got 'abc'" in err
    assert "  RPC_RETRIES: must be an integer between 0 and 10, got '99'" in err


def test_node_refuses_unbuilt_role(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NODE_TYPE", "cache")
    monkeypatch.setitem(roles.NOT_BUILT, "cache", "the cache role is not built yet (see issue 4)")
    assert cli.main(["node"]) == 2
    assert "the cache role is not built yet" in capsys.readouterr().err


def test_up_refuses_unbuilt_role_before_starting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_cluster(**kwargs: object) -> None:
        raise AssertionError("a cluster was created")

    monkeypatch.setattr(cli, "LocalCluster", no_cluster)
    monkeypatch.setitem(roles.NOT_BUILT, "cache", "the cache role is not built yet (see issue 4)")
    assert cli.main(["up", "--role", "cache"]) == 2
    assert "the cache role is not built yet (see issue 4)" in capsys.readouterr().err


def test_up_names_the_taken_port(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "node_class", lambda role: object)
    base = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", base + 1))
        sock.listen()
        assert cli.main(["up", "--base-port", str(base), "--nodes", "3"]) == 2
    err = capsys.readouterr().err
    assert f"port {base + 1} is already in use (needed by node2)" in err


def test_up_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["up", "--nodes", "0"], ["up", "--cluster-name", "Bad_Name"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
    assert "must be" in capsys.readouterr().err


@pytest.mark.integration
def test_up_runs_a_cluster_until_ctrl_c() -> None:
    try:
        node_class("lock_manager")
    except RoleNotAvailable as exc:
        pytest.skip(str(exc))
    base = free_port()
    if not all(port_is_free(base + i) for i in range(2)):
        pytest.skip("ports taken")
    argv = [sys.executable, "-m", "distcluster_worker.cli", "up", "--nodes", "2"]
    proc = subprocess.Popen(
        [*argv, "--base-port", str(base)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        if "Ctrl-C stops" in line:
            break
    output = "".join(lines)
    pids = [int(m) for m in re.findall(r"^\s+node\d+\s+\S+\s+(\d+)\s*$", output, re.M)]
    assert len(pids) == 2, output
    assert "[node1] " in output and "Redis: redis://127.0.0.1:" in output
    assert "/lock/acquire" in output
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


class _ProbeTarget(http.server.BaseHTTPRequestHandler):
    """Answers like a node that is alive but not ready."""

    def do_GET(self) -> None:  # noqa: N802 (the name http.server dispatches to)
        status = 200 if self.path == "/health" else 503
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def probe_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ProbeTarget)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_probe_passes_on_200(probe_port: int) -> None:
    assert cli.main(["probe", "--port", str(probe_port)]) == 0


def test_probe_fails_when_not_ready(probe_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["probe", "--port", str(probe_port), "--path", "/ready"]) == 1
    assert "answered 503" in capsys.readouterr().err


def test_probe_reads_port_from_environment(
    probe_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORT", str(probe_port))
    assert cli.main(["probe"]) == 0


def test_probe_fails_when_nothing_listens(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["probe", "--port", str(free_port()), "--timeout", "0.5"]) == 1
    assert "127.0.0.1" in capsys.readouterr().err
