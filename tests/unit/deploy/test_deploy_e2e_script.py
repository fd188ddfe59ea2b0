"""`make e2e` without a reachable Docker engine must say so and fail, never pass quietly."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def run_e2e(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REPO / "docker" / "e2e.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_no_engine_is_reported_and_fails(tmp_path: Path) -> None:
    if shutil.which("docker") is None:
        pytest.skip("no docker client here: covered by test_no_client_is_reported_and_fails")
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-such-docker.sock"}
    done = run_e2e(env)
    assert done.returncode == 1
    assert "no Docker engine answers" in done.stderr


def test_no_client_is_reported_and_fails(tmp_path: Path) -> None:
    # A PATH with bash and the basic tools only, but no docker.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "env"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    done = run_e2e({"PATH": str(bin_dir), "HOME": str(tmp_path)})
    assert done.returncode == 1
    assert "docker is not installed" in done.stderr
