"""Drive the docker compose cluster of the repository for the e2e scenarios.

The scenarios run against the real `docker-compose.yml` and `Dockerfile.node` image on a
real Docker engine, through the published ports, exactly as a user would. Each role gets
its own compose project (a unique project name, network name and free host ports, so a
cluster the user already runs is never touched), and `down -v` removes it at the end,
also when a step failed.

A node cut off with `docker network disconnect` loses its published port too (the port
is forwarded over that network), so questions to such a node go through `docker exec`
and the node's own loopback: the only way to see what a cut-off node would answer.

The scalable `worker` service grows and shrinks with `scale(n)`, as a user would with
`up -d --scale worker=N`; each replica is known by its NODE_ID (its container host name)
and reached on the free host port compose published for it (`port --index`).

Works with `docker compose` (v2) and `docker-compose` (1.29); `COMPOSE` in the
environment picks one (`COMPOSE="docker-compose"`), else v2 is preferred when present.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
NODES = ("node1", "node2", "node3")
WORKER = "worker"
INNER_PORT = 8000


class E2EError(AssertionError):
    """A step of a scenario did not happen within its bound."""


def compose_command() -> list[str]:
    """The compose CLI to use: $COMPOSE, else `docker compose` when the plugin exists."""
    chosen = os.environ.get("COMPOSE")
    if chosen:
        return shlex.split(chosen)
    probe = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, check=False
    )
    return ["docker", "compose"] if probe.returncode == 0 else ["docker-compose"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(args: Sequence[str], env: Mapping[str, str] | None = None, check: bool = True) -> str:
    """Run a command; on failure raise with its output, which pytest then shows."""
    done = subprocess.run(
        list(args), cwd=REPO, env=dict(env) if env else None, capture_output=True, text=True
    )
    if check and done.returncode != 0:
        raise E2EError(
            f"{' '.join(args)} exited {done.returncode}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return done.stdout


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float, every_s: float = 0.3) -> T:
    """Poll ``probe`` until it returns something other than None (or falsy), or fail."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except (OSError, E2EError, ValueError) as exc:
            last_error, value = exc, None
        if value:
            return value
        time.sleep(every_s)
    raise E2EError(f"{what}: not within {timeout_s:.0f} s (last error: {last_error})")


@dataclass
class Reply:
    status: int
    body: Any

    def field(self, name: str) -> Any:
        if not isinstance(self.body, dict):
            raise E2EError(f"expected a JSON object, got {self.body!r}")
        return self.body.get(name)


def http(method: str, url: str, body: Any = None, timeout_s: float = 10.0) -> Reply:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return Reply(response.status, _decode(response.read()))
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, _decode(exc.read()))


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


def container_health(container: str) -> str:
    """``healthy``, ``starting``, ``unhealthy``, ``none`` (no healthcheck) or ``stopped``."""
    parsed = json.loads(run(["docker", "inspect", "-f", "{{json .State}}", container]))
    if not parsed.get("Running"):
        return "stopped"
    return str(parsed.get("Health", {}).get("Status", "none"))


def wait_container_healthy(what: str, container: str, timeout_s: float) -> None:
    wait_for(f"{what} healthy", lambda: container_health(container) == "healthy", timeout_s)


# Run inside a container whose network is cut: ask the node on its own loopback.
_EXEC_CLIENT = """
import json, sys, urllib.error, urllib.request
method, path, body = sys.argv[1], sys.argv[2], sys.argv[3]
req = urllib.request.Request("http://127.0.0.1:8000" + path,
    data=body.encode() if body else None, method=method,
    headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=15) as r:
        status, raw = r.status, r.read()
except urllib.error.HTTPError as e:
    status, raw = e.code, e.read()
print(json.dumps({"status": status, "body": raw.decode()}))
"""


@dataclass(frozen=True)
class Worker:
    """One replica of the `worker` service."""

    number: int  # compose's replica number: worker_1, worker_2 ...
    container: str
    node_id: str  # its container host name, which the node takes as NODE_ID
    port: int  # the host port published for its port 8000


@dataclass
class ComposeCluster:
    """One compose project of the repository's docker-compose.yml, for one role."""

    role: str
    project: str
    image: str
    redis_image: str
    extra_env: Mapping[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    worker_ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.compose = compose_command()
        self.network = f"{self.project}_net"
        if not self.ports:
            self.ports = {node: free_port() for node in NODES}

    # -- compose ----------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            COMPOSE_PROJECT_NAME=self.project,
            NODE_TYPE=self.role,
            NODE_IMAGE=self.image,
            REDIS_IMAGE=self.redis_image,
            NETWORK_NAME=self.network,
            CLUSTER_NAME=f"e2e-{self.role.replace('_', '-')}",
        )
        env.update({f"{node.upper()}_PORT": str(port) for node, port in self.ports.items()})
        env.update(self.extra_env)
        return env

    def compose_run(self, *args: str, check: bool = True) -> str:
        return run([*self.compose, *args], env=self.env(), check=check)

    def up(self) -> None:
        self.compose_run("up", "-d", "--no-build")
        for node in NODES:
            self.wait_healthy(node)

    def down(self) -> None:
        self.compose_run("down", "-v", "--remove-orphans", "--timeout", "5", check=False)

    def logs(self) -> str:
        return self.compose_run("logs", "--no-color", "--tail", "40", check=False)

    def container(self, service: str) -> str:
        cid = self.compose_run("ps", "-q", service).strip()
        if not cid:
            raise E2EError(f"no container for {service}")
        return cid.splitlines()[0]

    def health(self, service: str) -> str:
        return container_health(self.container(service))

    def wait_healthy(self, service: str, timeout_s: float = 60.0) -> None:
        wait_for(f"{service} healthy", lambda: self.health(service) == "healthy", timeout_s)

    # -- the scalable worker service ---------------------------------------------------

    def scale(self, replicas: int, timeout_s: float = 90.0) -> list[Worker]:
        """Run ``replicas`` workers, waiting until each is healthy; node1..3 are left as
        they are (`--no-recreate`), and when shrinking compose removes the highest
        replica numbers."""
        self.compose_run(
            "up", "-d", "--no-build", "--no-recreate", "--scale", f"{WORKER}={replicas}"
        )
        workers = self.workers()
        if len(workers) != replicas:
            raise E2EError(f"asked for {replicas} workers, compose runs {workers}")
        for worker in workers:
            wait_container_healthy(f"{WORKER}_{worker.number}", worker.container, timeout_s)
        self.worker_ports = {worker.node_id: worker.port for worker in workers}
        return workers

    def workers(self) -> list[Worker]:
        """The replicas of the worker service, by replica number."""
        found = []
        for container in self.compose_run("ps", "-q", WORKER).split():
            labels = '{{index .Config.Labels "com.docker.compose.container-number"}}'
            number, hostname = run(
                ["docker", "inspect", "-f", labels + " {{.Config.Hostname}}", container]
            ).split()
            address = self.compose_run("port", "--index", number, WORKER, str(INNER_PORT))
            port = int(address.strip().rpartition(":")[2])
            found.append(Worker(int(number), container, hostname, port))
        return sorted(found, key=lambda worker: worker.number)

    # -- faults -----------------------------------------------------------------------

    def kill(self, service: str) -> None:
        run(["docker", "kill", self.container(service)])

    def start(self, service: str) -> None:
        run(["docker", "start", self.container(service)])

    def stop(self, service: str) -> int:
        """`docker stop` (SIGTERM, then SIGKILL after 10 s); the container's exit code."""
        container = self.container(service)
        run(["docker", "stop", "--time", "10", container])
        return int(run(["docker", "inspect", "-f", "{{.State.ExitCode}}", container]).strip())

    def restart(self, service: str) -> None:
        run(["docker", "restart", "--time", "10", self.container(service)])

    def disconnect(self, service: str) -> None:
        run(["docker", "network", "disconnect", self.network, self.container(service)])

    def reconnect(self, service: str) -> None:
        # The alias keeps the service name resolvable by the peers, as compose set it up.
        run(
            [
                "docker",
                "network",
                "connect",
                "--alias",
                service,
                self.network,
                self.container(service),
            ]
        )

    # -- HTTP -------------------------------------------------------------------------

    def url(self, node: str, path: str) -> str:
        """``node`` is node1..node3 or a worker's node id."""
        port = self.ports[node] if node in self.ports else self.worker_ports[node]
        return f"http://127.0.0.1:{port}{path}"

    def call(self, node: str, method: str, path: str, body: Any = None) -> Reply:
        return http(method, self.url(node, path), body)

    def get(self, node: str, path: str) -> Reply:
        return self.call(node, "GET", path)

    def post(self, node: str, path: str, body: Any) -> Reply:
        return self.call(node, "POST", path, body)

    def call_inside(self, node: str, method: str, path: str, body: Any = None) -> Reply:
        """Ask the node on its own loopback through `docker exec` (works while cut off)."""
        raw = "" if body is None else json.dumps(body)
        out = run(
            [
                "docker",
                "exec",
                self.container(node),
                "python",
                "-c",
                _EXEC_CLIENT,
                method,
                path,
                raw,
            ]
        )
        parsed = json.loads(out.strip().splitlines()[-1])
        return Reply(int(parsed["status"]), _decode(parsed["body"].encode()))

    def wait_ready(self, node: str, timeout_s: float = 30.0) -> None:
        wait_for(f"{node} ready", lambda: self.get(node, "/ready").status == 200, timeout_s)
