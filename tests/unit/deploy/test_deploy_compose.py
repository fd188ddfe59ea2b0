"""The compose files stay true to the node's settings: every variable a node reads is set
from .env in docker-compose.yml with the same default .env.example documents, and that
default is the node's own. A setting added to the worker without its compose line, or a
default changed in one place only, fails here instead of surprising a compose user."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from distcluster_worker.cache_role.settings import ENV_PREFIX as CACHE_PREFIX
from distcluster_worker.cache_role.settings import CacheSettings
from distcluster_worker.lock_role.settings import ENV_PREFIX as LOCK_PREFIX
from distcluster_worker.lock_role.settings import LockRoleSettings, load_lock_settings
from distcluster_worker.queue_role.settings import ENV_PREFIX as QUEUE_PREFIX
from distcluster_worker.queue_role.settings import QueueSettings
from distcluster_worker.shell.config import Settings, host_node_id, load_settings

REPO = Path(__file__).resolve().parents[3]
PER_CONTAINER = {"NODE_ID", "HOST", "PORT"}
COMPOSE_ONLY = {
    "COMPOSE_PROJECT_NAME",
    "NODE_IMAGE",
    "BASE_IMAGE",
    "REDIS_IMAGE",
    "NETWORK_NAME",
    "NODE1_PORT",
    "NODE2_PORT",
    "NODE3_PORT",
    "WORKER_REPLICAS",
}
# Defaults that differ on purpose under compose: peers and Redis by service name.
COMPOSE_DEFAULTS = {
    "PEERS": "node1=node1:8000,node2=node2:8000,node3=node3:8000",
    "REDIS_URL": "redis://redis:6379/0",
}


def node_defaults() -> dict[str, str]:
    """Every variable a node reads, with the default the node itself applies."""
    found: dict[str, str] = {}
    for prefix, model in (
        ("", Settings),
        (LOCK_PREFIX, LockRoleSettings),
        (QUEUE_PREFIX, QueueSettings),
        (CACHE_PREFIX, CacheSettings),
    ):
        for name, info in model.model_fields.items():
            default = info.get_default(call_default_factory=True)
            text = str(default).lower() if isinstance(default, bool) else str(default)
            found[f"{prefix}{name.upper()}"] = "" if default is None else text
    return {name: value for name, value in found.items() if name not in PER_CONTAINER}


def env_example() -> dict[str, str]:
    pairs = re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", (REPO / ".env.example").read_text(), re.M)
    return dict(pairs)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_env_example_documents_every_node_setting_with_its_default() -> None:
    documented = env_example()
    expected = {**node_defaults(), **COMPOSE_DEFAULTS}
    node_part = {k: v for k, v in documented.items() if k not in COMPOSE_ONLY}
    assert node_part == {name: expected[name] for name in node_part}
    assert set(node_part) == set(expected)


def test_every_documented_variable_has_a_comment() -> None:
    lines = (REPO / ".env.example").read_text().splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^[A-Z][A-Z0-9_]*=", line):
            block = lines[:index]
            while block and re.match(r"^[A-Z][A-Z0-9_]*=", block[-1]):
                block.pop()
            assert block and block[-1].startswith("#"), f"{line} has no comment above it"


def test_compose_sets_every_node_setting_from_env(compose: dict[str, Any]) -> None:
    environment = compose["x-node-environment"]
    documented = env_example()
    for name in node_defaults():
        assert environment[name] == f"${{{name}:-{documented[name]}}}", name
    assert environment["HOST"] == "0.0.0.0"


def test_compose_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", "node1", "node2", "node3", "worker"}
    redis = services["redis"]
    assert "--appendonly" in redis["command"] and "redis_data:/data" in redis["volumes"]
    assert redis["healthcheck"]["test"][-1] == "ping"
    for index in (1, 2, 3):
        node = services[f"node{index}"]
        assert node["environment"]["NODE_ID"] == f"node{index}"
        assert node["ports"] == [f"${{NODE{index}_PORT:-800{index}}}:8000"]
        assert node["depends_on"] == {"redis": {"condition": "service_healthy"}}
        assert node["networks"] == ["dist_net"] and node["restart"] == "unless-stopped"
        assert node["build"]["dockerfile"] == "Dockerfile.node"
    assert compose["networks"]["dist_net"]["driver"] == "bridge"
    assert "version" not in compose  # both compose v2 and 1.29 read the spec format


def test_worker_service_scales_from_zero_and_joins(compose: dict[str, Any]) -> None:
    """`docker compose up -d` still runs node1..3 alone; `--scale worker=N` adds nodes that
    take their id and URL from the container host name, publish 8000 on a free host port
    and join the lock cluster instead of bootstrapping one of their own."""
    worker, node1 = compose["services"]["worker"], compose["services"]["node1"]
    assert worker["deploy"] == {"replicas": "${WORKER_REPLICAS:-0}"}
    assert env_example()["WORKER_REPLICAS"] == "0"
    assert worker["ports"] == ["8000"]
    assert "hostname" not in worker and "container_name" not in worker
    for key in ("image", "build", "depends_on", "networks", "restart", "healthcheck"):
        assert worker[key] == node1[key], key
    environment = worker["environment"]
    assert environment["NODE_ID"] == "" and environment["ADVERTISE_URL"] == "${ADVERTISE_URL:-}"
    assert environment["RAFT_JOIN"] == "auto"
    peers = dict(item.split("=") for item in COMPOSE_DEFAULTS["PEERS"].split(","))
    default_voters = ",".join(sorted(peers))
    assert environment["RAFT_INITIAL_VOTERS"] == f"${{RAFT_INITIAL_VOTERS:-{default_voters}}}"
    own = {"NODE_ID", "RAFT_JOIN", "RAFT_INITIAL_VOTERS"}
    anchor = compose["x-node-environment"]
    assert {k: v for k, v in environment.items() if k not in own} == {
        k: v for k, v in anchor.items() if k not in own
    }


def test_worker_settings_load_with_the_host_name_as_node_id() -> None:
    """The worker's environment as compose passes it: empty NODE_ID is the host name, and
    a worker outside the bootstrap voters starts in join mode."""
    env = {
        "NODE_ID": "",
        "HOST": "0.0.0.0",
        "PORT": "8000",
        "PEERS": COMPOSE_DEFAULTS["PEERS"],
        "ADVERTISE_URL": "",
        "RAFT_JOIN": "auto",
        "RAFT_INITIAL_VOTERS": "node1,node2,node3",
    }
    settings = load_settings(env)
    assert settings.node_id == host_node_id()
    assert settings.advertised_url == f"http://{socket.gethostname()}:8000"
    lock = load_lock_settings(env)
    voters = lock.bootstrap_voters(settings.node_id, settings.peer_urls)
    assert voters == ("node1", "node2", "node3")
    assert lock.joins(settings.node_id, voters, empty=True)
    assert not lock.joins("node2", voters, empty=True)


def test_peers_default_names_every_node_service(compose: dict[str, Any]) -> None:
    peers = dict(item.split("=") for item in COMPOSE_DEFAULTS["PEERS"].split(","))
    nodes = {name for name in compose["services"] if name.startswith("node")}
    assert set(peers) == nodes
    assert all(address == f"{name}:8000" for name, address in peers.items())


def test_dockerfile_is_offline_ready_and_hardened() -> None:
    text = (REPO / "Dockerfile.node").read_text()
    assert not text.startswith("# syntax"), "a syntax line pulls a frontend image"
    assert re.search(r"^ARG BASE_IMAGE=python:3\.\d+-slim", text, re.M)
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert "HEALTHCHECK" in text and "distcluster_worker.probe" in text
    for label in ("title", "version", "revision", "created", "source", "licenses"):
        assert f"org.opencontainers.image.{label}" in text
    final = text[text.rindex("\nFROM ") :]
    assert final.splitlines()[1].endswith(" AS node"), "the default target is the node"
    assert "pip install" not in final, "the final stage must not build anything"


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("*")] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {
        "pyproject.toml",
        "README.md",
        "worker",
        "operator",
        "docker/install-venv.sh",
    }
