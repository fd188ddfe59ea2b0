"""Drift: the committed CRD files equal what `crd.py` generates, and `--check` notices when
one of them is edited by hand or missing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from op_kube import REPO

from distcluster_operator.crd import crd_manifest
from distcluster_operator.generate import HEADER, TARGETS, main, render

MANIFEST, CHART = (str(target) for target in TARGETS)


def copy_tree(tmp_path: Path) -> Path:
    """A copy of the two generated files under a scratch root."""
    for target in TARGETS:
        (tmp_path / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / target, tmp_path / target)
    return tmp_path


def test_targets() -> None:
    assert MANIFEST == "manifests/crd.yaml"
    assert CHART == "helm/distcluster-operator/crds/distclusters.yaml"


def test_the_committed_files_are_up_to_date() -> None:
    assert main(["--check", "--root", str(REPO)]) == 0


def test_check_runs_as_a_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "distcluster_operator.generate", "--check", "--root", str(REPO)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("target", [MANIFEST, CHART])
def test_check_fails_and_names_an_edited_file(
    target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy_tree(tmp_path)
    edited = root / target
    edited.write_text(edited.read_text().replace("maximum: 9", "maximum: 11"), encoding="utf-8")
    assert main(["--check", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert target in err
    other = CHART if target == MANIFEST else MANIFEST
    assert other not in err


def test_check_fails_on_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = copy_tree(tmp_path)
    (root / CHART).unlink()
    assert main(["--check", "--root", str(root)]) == 1
    assert CHART in capsys.readouterr().err


def test_generate_writes_both_files_then_check_passes(tmp_path: Path) -> None:
    assert main(["--root", str(tmp_path)]) == 0
    assert main(["--check", "--root", str(tmp_path)]) == 0
    for target in TARGETS:
        text = (tmp_path / target).read_text(encoding="utf-8")
        assert text == render()
        assert text.startswith(HEADER) and "do not edit" in HEADER
        assert yaml.safe_load(text) == crd_manifest()


def test_generate_repairs_an_edited_file(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    (root / MANIFEST).write_text("# hand edit\n", encoding="utf-8")
    assert main(["--root", str(root)]) == 0
    assert main(["--check", "--root", str(root)]) == 0
