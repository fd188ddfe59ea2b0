"""The built images themselves: what a user and a platform team rely on without reading
Dockerfile.node (non-root, no build tools, labels, healthcheck, the operator's entry)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from compose_harness import run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

NODE_IMAGE = os.environ.get("E2E_IMAGE", "distcluster/node:0.1.0")
OPERATOR_IMAGE = os.environ.get("E2E_OPERATOR_IMAGE", "distcluster/operator:0.1.0")


def inspect(image: str) -> dict[str, object]:
    parsed = json.loads(run(["docker", "image", "inspect", image]))
    assert isinstance(parsed, list) and parsed
    config = parsed[0]["Config"]
    assert isinstance(config, dict)
    return config


def shell(image: str, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "sh", image, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize("image", [NODE_IMAGE, OPERATOR_IMAGE])
def test_runs_as_non_root_without_build_tools(image: str) -> None:
    config = inspect(image)
    assert config["User"] == "10001:10001"
    done = shell(image, "id -u; command -v gcc cc pip pip3 || true; ls /src 2>&1 || true")
    lines = done.stdout.split()
    assert lines[0] == "10001"
    assert not any(line.endswith(("gcc", "cc", "pip", "pip3")) for line in lines[1:]), done.stdout
    assert "No such file" in done.stdout + done.stderr  # no source tree in the final stage


@pytest.mark.parametrize("image", [NODE_IMAGE, OPERATOR_IMAGE])
def test_oci_labels(image: str) -> None:
    labels = inspect(image)["Labels"]
    assert isinstance(labels, dict)
    for key in ("title", "description", "version", "revision", "created", "source", "licenses"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    assert labels["org.opencontainers.image.revision"] != "unknown"


def test_node_image_has_a_healthcheck_and_serves() -> None:
    config = inspect(NODE_IMAGE)
    health = config["Healthcheck"]
    assert isinstance(health, dict)
    assert "distcluster_worker.probe" in " ".join(health["Test"])
    assert config["StopSignal"] == "SIGTERM"
    version = subprocess.run(
        ["docker", "run", "--rm", NODE_IMAGE, "--version"], capture_output=True, text=True
    )
    assert version.returncode == 0 and version.stdout.startswith("distcluster ")


def test_operator_image_entry_point() -> None:
    helped = subprocess.run(
        ["docker", "run", "--rm", OPERATOR_IMAGE, "--help"], capture_output=True, text=True
    )
    assert helped.returncode == 0 and "--all-namespaces" in helped.stdout
    # Outside a cluster and without a kubeconfig it says so and exits 1 (no traceback).
    alone = subprocess.run(
        ["docker", "run", "--rm", OPERATOR_IMAGE], capture_output=True, text=True
    )
    assert alone.returncode == 1
    assert "no Kubernetes credentials" in alone.stderr
    assert "Traceback" not in alone.stderr
