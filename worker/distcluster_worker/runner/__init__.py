"""Local processes for the CLI, integration tests and benchmarks.

``RedisServer`` runs a real redis-server (AOF on) in a data directory, ``NodeProcess`` runs
one ``distcluster node`` process, ``LocalCluster`` runs Redis and N nodes wired as peers.
They use blocking calls and the monotonic clock on purpose: they drive processes from the
outside and never run inside a node's event loop.
"""

from distcluster_worker.runner.cluster import LocalCluster, free_port, node_env
from distcluster_worker.runner.process import NodeProcess
from distcluster_worker.runner.redis_server import RedisServer, find_redis_server

__all__ = [
    "LocalCluster",
    "NodeProcess",
    "RedisServer",
    "find_redis_server",
    "free_port",
    "node_env",
]
