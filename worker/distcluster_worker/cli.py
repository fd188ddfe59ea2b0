"""The ``distcluster`` console script.

``distcluster node`` runs one node from the environment: the form every deployment uses
(docker compose, Kubernetes, ``distcluster up`` and the integration tests all start nodes
this way). Bad configuration or a role that is not built exits with status 2 and a
message naming each problem, before anything starts.

``distcluster up`` runs a whole local cluster in the foreground: Redis (embedded unless
``--redis-url``), then the nodes, each output line prefixed with ``[nodeN]``. Ctrl-C or
SIGTERM stops every child and Redis and exits 0. Everything that can be checked is checked
before a process starts (role, ports, Redis binary), so a refused ``up`` leaves nothing
behind.

``distcluster probe`` asks the local node's ``/health`` (or ``--path /ready``) and exits 0
on 200 (see ``probe``, which the container HEALTHCHECK runs directly to start faster).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Coroutine, Sequence
from types import FrameType
from typing import Any

from distcluster_worker import __version__, probe
from distcluster_worker.roles import ALL_ROLES, RoleNotAvailable, node_class
from distcluster_worker.runner.cluster import LocalCluster, port_is_free
from distcluster_worker.runner.process import OUTPUT_LOCK
from distcluster_worker.runner.redis_server import RedisNotFoundError, find_redis_server
from distcluster_worker.shell.config import CLUSTER_NAME_RE, ConfigError, load_settings
from distcluster_worker.shell.logs import configure_logging, get_logger

_WATCH_S = 0.5

_EXAMPLES: dict[str, list[str]] = {
    "lock_manager": [
        "curl -s -X POST {url}/lock/acquire -H 'content-type: application/json' "
        '-d \'{{"resource": "orders", "owner": "alice", "mode": "exclusive", '
        '"ttl_ms": 30000, "wait_ms": 5000}}\'',
        "curl -s -X POST {url}/lock/release -H 'content-type: application/json' "
        '-d \'{{"resource": "orders", "owner": "alice", "token": TOKEN}}\'',
        "curl -s {url}/lock/orders",
        "curl -s {url}/raft/status",
    ],
    "queue": [
        "curl -s -X POST {url}/queue/publish -H 'content-type: application/json' "
        '-d \'{{"topic": "orders", "message": {{"id": 1}}}}\'',
        "curl -s -X POST {url}/queue/consume -H 'content-type: application/json' "
        '-d \'{{"topic": "orders", "group": "billing", "consumer": "worker-1", "max": 10}}\'',
        "curl -s -X POST {url}/queue/ack -H 'content-type: application/json' "
        '-d \'{{"topic": "orders", "group": "billing", "ids": ["ID"]}}\'',
        "curl -s {url}/queue/orders/stats",
        "curl -s '{url}/ring?topic=orders'",
    ],
    "cache": [
        "curl -s -X PUT {url}/cache/user:42 -H 'content-type: application/json' "
        '-d \'{{"value": "Ada"}}\'',
        "curl -s {url}/cache/user:42",
        "curl -s -X DELETE {url}/cache/user:42",
        "curl -s {url}/cache/stats",
        "curl -s {url}/cache/lines",
    ],
}


def _say(text: str, *, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    with OUTPUT_LOCK:
        stream.write(text + "\n")
        stream.flush()


def _fail(message: str, status: int = 2) -> int:
    _say(f"distcluster: {message}", err=True)
    return status


def run_node() -> int:
    """``distcluster node``: one node, configured by the environment."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        lines = "\n".join(f"  {problem}" for problem in exc.problems)
        return _fail(f"invalid configuration:\n{lines}")
    try:
        cls = node_class(settings.node_type)
    except RoleNotAvailable as exc:
        return _fail(str(exc))
    try:
        node = cls(settings)  # a role reads and validates its own settings here
    except ConfigError as exc:
        lines = "\n".join(f"  {problem}" for problem in exc.problems)
        return _fail(f"invalid configuration:\n{lines}")
    configure_logging(settings.node_id, settings.log_level)
    log = get_logger("distcluster.cli")
    try:
        _run_event_loop(node.serve_forever())
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        log.error("cannot start the node", extra={"error": str(exc)})
        return _fail(f"cannot start node {settings.node_id}: {exc}", status=1)
    except Exception:
        log.exception("the node failed")
        return 1
    return 0


def _run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run the node on uvloop where it is installed (a dependency on every platform that
    has it: it serves more requests per CPU second), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def _check_up(args: argparse.Namespace) -> str | None:
    """Why ``up`` cannot start, or None; checked before any process starts."""
    try:
        node_class(args.role)
    except RoleNotAvailable as exc:
        return str(exc)
    for port in range(args.base_port, args.base_port + args.nodes):
        if not port_is_free(port):
            return (
                f"port {port} is already in use (needed by node{port - args.base_port + 1}); "
                "stop what uses it or choose another --base-port"
            )
    if args.redis_url is None:
        try:
            find_redis_server()
        except RedisNotFoundError as exc:
            return f"{exc}; or give --redis-url"
    return None


def _print_endpoints(cluster: LocalCluster) -> None:
    rows = [("node", "url", "pid")]
    rows += [(n, cluster.urls[n], str(p.pid)) for n, p in cluster.nodes.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["", f"DistCluster '{cluster.cluster_name}': {cluster.role}, {len(rows) - 1} nodes"]
    lines += [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    ]
    kind = "embedded, AOF on" if cluster.redis is not None else "external"
    lines.append(f"  Redis: {cluster.redis_url} ({kind})")
    first = next(iter(cluster.urls.values()))
    examples = [e.format(url=first) for e in _EXAMPLES.get(cluster.role, [])]
    examples += [f"curl -s {first}/health", f"curl -s {first}/cluster"]
    lines += ["", "Try:"] + [f"  {e}" for e in examples]
    lines += ["", "Ctrl-C stops every node and Redis.", ""]
    _say("\n".join(lines))


class StopRequest:
    """Set by the SIGINT/SIGTERM handler, read by the watch loop.

    A plain attribute on purpose: a signal handler runs in the main thread between two
    bytecodes, possibly while that thread holds a lock; `threading.Event.set` takes the
    event's lock and so deadlocked `up` when SIGTERM arrived while the watch loop was inside
    `Event.wait` (seen: `timeout 25 make run` left every process running).
    """

    def __init__(self) -> None:
        self.requested = False

    def request(self, signum: int = 0, frame: FrameType | None = None) -> None:
        self.requested = True


def _watch(cluster: LocalCluster, stop: StopRequest) -> int:
    """Wait for Ctrl-C/SIGTERM, saying when a child dies; 1 if every node died."""
    reported: set[str] = set()
    while not stop.requested:
        time.sleep(_WATCH_S)
        if stop.requested:
            break
        for node_id, proc in cluster.nodes.items():
            if node_id not in reported and not proc.alive:
                reported.add(node_id)
                _say(f"distcluster: {node_id} exited with code {proc.returncode}", err=True)
        if cluster.redis is not None and not cluster.redis.alive and "redis" not in reported:
            reported.add("redis")
            _say(f"distcluster: Redis exited; see {cluster.redis.log_path}", err=True)
        if len(reported & set(cluster.nodes)) == len(cluster.nodes):
            _say("distcluster: every node has exited; stopping", err=True)
            return 1
    return 0


def run_up(args: argparse.Namespace) -> int:
    """``distcluster up``: Redis and N nodes in the foreground until Ctrl-C."""
    problem = _check_up(args)
    if problem is not None:
        return _fail(problem)
    stop = StopRequest()
    previous = {sig: signal.signal(sig, stop.request) for sig in (signal.SIGINT, signal.SIGTERM)}
    cluster = LocalCluster(
        role=args.role,
        nodes=args.nodes,
        base_port=args.base_port,
        redis_url=args.redis_url,
        cluster_name=args.cluster_name,
        prefix_output=True,
    )
    try:
        try:
            cluster.start()
        except (RuntimeError, TimeoutError, OSError) as exc:
            return _fail(f"the cluster did not start: {exc}", status=1)
        _print_endpoints(cluster)
        status = _watch(cluster, stop)
        _say("distcluster: stopping nodes and Redis")
        return status
    finally:
        cluster.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _cluster_name(text: str) -> str:
    if not CLUSTER_NAME_RE.match(text):
        raise argparse.ArgumentTypeError(f"must be 1 to 63 characters from a-z 0-9 -: {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distcluster", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"distcluster {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("node", help="run one node configured by the environment")
    up = sub.add_parser("up", help="run Redis and a local cluster in the foreground")
    up.add_argument("--role", choices=ALL_ROLES, default="lock_manager")
    up.add_argument("--nodes", type=_positive, default=3)
    up.add_argument("--base-port", type=_positive, default=8001)
    up.add_argument("--redis-url", default=None, help="use this Redis instead of an embedded one")
    up.add_argument("--cluster-name", type=_cluster_name, default="distcluster")
    probe = sub.add_parser("probe", help="exit 0 when the local node answers 200 (healthcheck)")
    probe.add_argument("--path", choices=("/health", "/ready"), default="/health")
    probe.add_argument("--port", type=_positive, default=None, help="default: $PORT")
    probe.add_argument("--timeout", type=float, default=2.0, help="seconds")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "node":
        return run_node()
    if args.command == "up":
        if args.base_port + args.nodes - 1 > 65535:
            parser.error("--base-port + --nodes - 1 must not exceed 65535")
        return run_up(args)
    if args.command == "probe":
        return probe.probe(args.path, args.port, args.timeout)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
