"""A whole local cluster: one Redis (embedded unless a URL is given) and N node processes.

Nodes are ``node1..nodeN`` on ports ``base_port..base_port+N-1``, all bound to loopback.
Each node's ``PEERS`` lists every node; the node drops itself. ``peer_address(src, dst)``
chooses the address ``src`` uses to reach ``dst``, so a test can route every directed link
through its own proxy and cut or delay it.

``stop()`` always stops everything it started, even after a failed start, so that no
process is left behind; the class is a context manager for that reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from distcluster_worker.runner.process import NodeProcess, http_ok
from distcluster_worker.runner.redis_server import RedisServer, pick_free_port

PeerAddress = Callable[[str, str], str]
_POLL_S = 0.1


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1."""
    return pick_free_port("127.0.0.1")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on host:port (we can bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def node_env(
    *,
    role: str,
    node_id: str,
    port: int,
    peers: Mapping[str, str],
    redis_url: str,
    cluster_name: str,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The full environment of one node process: ours, plus its settings, plus ``extra``."""
    env = dict(os.environ)
    env.update(
        {
            "NODE_ID": node_id,
            "NODE_TYPE": role,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "PEERS": ",".join(f"{peer_id}={addr}" for peer_id, addr in peers.items()),
            "REDIS_URL": redis_url,
            "CLUSTER_NAME": cluster_name,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


class LocalCluster:
    """Redis and N nodes of one role on loopback; see the module docstring."""

    def __init__(
        self,
        *,
        role: str = "lock_manager",
        nodes: int = 3,
        base_port: int = 8001,
        redis_url: str | None = None,
        cluster_name: str = "distcluster",
        workdir: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
        peer_address: PeerAddress | None = None,
        prefix_output: bool = False,
        log_dir: Path | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.role = role
        self.cluster_name = cluster_name
        self._owns_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="distcluster-")) if workdir is None else workdir
        self.ports = {f"node{i + 1}": base_port + i for i in range(nodes)}
        self.urls = {node_id: f"http://127.0.0.1:{port}" for node_id, port in self.ports.items()}
        self._peer_address = peer_address or self._direct_address
        self.redis: RedisServer | None = None
        if redis_url is None:
            self.redis = RedisServer(data_dir=self.workdir / "redis")
            redis_url = self.redis.url
        self.redis_url = redis_url
        self.extra_env = dict(extra_env or {})
        self._log_dir = log_dir
        self._prefix_output = prefix_output
        self.nodes = {
            node_id: NodeProcess(
                node_id,
                self.env_for(node_id),
                log_path=self._log_path(node_id),
                prefix_output=prefix_output,
            )
            for node_id in self.ports
        }

    def _direct_address(self, src: str, dst: str) -> str:
        return f"127.0.0.1:{self.ports[dst]}"

    def env_for(self, node_id: str) -> dict[str, str]:
        peers = {dst: self._peer_address(node_id, dst) for dst in self.ports if dst != node_id}
        return node_env(
            role=self.role,
            node_id=node_id,
            port=self.ports[node_id],
            peers=peers,
            redis_url=self.redis_url,
            cluster_name=self.cluster_name,
            extra=self.extra_env,
        )

    def add_node(
        self,
        node_id: str,
        port: int,
        *,
        extra_env: Mapping[str, str] | None = None,
        wait_healthy_s: float = 30,
    ) -> NodeProcess:
        """Start one more node while the cluster runs (scaling up).

        Its PEERS are the nodes already there, at their own ports (never through the
        ``peer_address`` mapping, which only knows the first nodes); theirs do not change:
        they learn the new node through discovery (``DISCOVERY=redis``, the default).
        Waits until healthy.
        """
        if node_id in self.nodes:
            raise ValueError(f"{node_id} is already a node of this cluster")
        peers = {dst: self._direct_address(node_id, dst) for dst in self.ports}
        self.ports[node_id] = port
        self.urls[node_id] = f"http://127.0.0.1:{port}"
        env = node_env(
            role=self.role,
            node_id=node_id,
            port=port,
            peers=peers,
            redis_url=self.redis_url,
            cluster_name=self.cluster_name,
            extra={**self.extra_env, **(extra_env or {})},
        )
        proc = self.nodes[node_id] = NodeProcess(
            node_id,
            env,
            log_path=self._log_path(node_id),
            prefix_output=self._prefix_output,
        )
        proc.start()
        proc.wait_healthy(self.urls[node_id], wait_healthy_s)
        return proc

    def remove_node(self, node_id: str) -> None:
        """Stop one node gracefully and forget it (scaling down)."""
        self.nodes.pop(node_id).stop()
        del self.ports[node_id], self.urls[node_id]

    def _log_path(self, node_id: str) -> Path | None:
        return (self._log_dir / f"{node_id}.log") if self._log_dir is not None else None

    def taken_ports(self) -> list[int]:
        """The node ports on which something already listens."""
        return [port for port in self.ports.values() if not port_is_free(port)]

    def start(self, wait_ready_s: float = 30) -> None:
        """Start Redis (unless a URL was given) and every node; wait until all are healthy."""
        try:
            if self.redis is not None:
                self.redis.start()
            for proc in self.nodes.values():
                proc.start()
            deadline = time.monotonic() + wait_ready_s
            for node_id, proc in self.nodes.items():
                proc.wait_healthy(self.urls[node_id], max(0.1, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout_s: float = 30, node_ids: list[str] | None = None) -> None:
        """Wait until ``GET /ready`` answers 200 on the given nodes (default: all)."""
        deadline = time.monotonic() + timeout_s
        pending = list(node_ids if node_ids is not None else self.nodes)
        while pending:
            pending = [n for n in pending if not http_ok(self.urls[n] + "/ready")]
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"not ready after {timeout_s} s: {', '.join(pending)}")
            time.sleep(_POLL_S)

    def restart_node(self, node_id: str) -> None:
        """Stop one node gracefully, start it again, wait until healthy."""
        proc = self.nodes[node_id]
        proc.stop()
        proc.start()
        proc.wait_healthy(self.urls[node_id])

    def stop(self) -> None:
        """Stop every node and Redis; remove the work directory if this object made it."""
        for proc in self.nodes.values():
            proc.terminate()  # All at once, so the shutdown takes one grace period, not N.
        for proc in self.nodes.values():
            proc.stop()
        if self.redis is not None:
            self.redis.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
