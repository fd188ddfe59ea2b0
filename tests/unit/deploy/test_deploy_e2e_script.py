"""The scripts behind `make e2e` and `make e2e-kind`: shellcheck-clean, and without the
tools they need they say so and fail, never pass quietly."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


SCRIPTS = [
    REPO / "docker" / "e2e.sh",
    REPO / "docker" / "build-base-image.sh",
    REPO / "docker" / "install-venv.sh",
    REPO / "scripts" / "e2e-kind.sh",
    REPO / ".ci" / "run",
]


def run_e2e(
    env: dict[str, str], script: Path = REPO / "docker" / "e2e.sh"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(script)],
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


def bare_path(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH has bash and the basic tools only: no docker, no kind."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "env"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    return {"PATH": str(bin_dir), "HOME": str(tmp_path)}


def test_no_client_is_reported_and_fails(tmp_path: Path) -> None:
    done = run_e2e(bare_path(tmp_path))
    assert done.returncode == 1
    assert "docker is not installed" in done.stderr


def test_kind_e2e_without_its_tools_is_reported_and_fails(tmp_path: Path) -> None:
    done = run_e2e(bare_path(tmp_path), REPO / "scripts" / "e2e-kind.sh")
    assert done.returncode == 1
    assert "docker is not installed" in done.stderr
    assert "kind, kubectl, helm" in done.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_are_shellcheck_clean(script: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (.ci/run installs it)")
    done = subprocess.run([shellcheck, str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout
