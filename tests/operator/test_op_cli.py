"""The `distcluster-operator` command line: flags to `kopf.run` options, and `main`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kopf
import kubernetes.config.kube_config
import pytest
from op_kmock import write_kubeconfig

from distcluster_operator.cli import main, parse_args, run_options
from distcluster_operator.handlers import DEFAULT_INTERVAL_S, Deps


def test_by_default_every_namespace_and_kopf_decides_peering() -> None:
    args = parse_args([])
    assert run_options(args) == {
        "clusterwide": True,
        "liveness_endpoint": None,
        "priority": None,
        "peering_name": None,
        "standalone": None,
    }
    assert args.reconcile_interval == DEFAULT_INTERVAL_S
    assert args.cluster_domain == "cluster.local"


def test_the_deployment_flags() -> None:
    args = parse_args(["--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"])
    options = run_options(args)
    assert options["clusterwide"] is True
    assert options["liveness_endpoint"] == "http://0.0.0.0:8080/healthz"


def test_namespaces_peering_and_standalone() -> None:
    options = run_options(parse_args(["-n", "a", "--namespace", "b", "--peering", "dc"]))
    assert options["namespaces"] == ["a", "b"]
    assert "clusterwide" not in options
    assert options["peering_name"] == "dc"
    assert options["standalone"] is None
    assert run_options(parse_args(["--standalone", "--priority", "5"])) == {
        "clusterwide": True,
        "liveness_endpoint": None,
        "priority": 5,
        "peering_name": None,
        "standalone": True,
    }


@pytest.mark.parametrize(
    "argv",
    [
        ["--namespace", "a", "--all-namespaces"],
        ["--peering", "dc", "--standalone"],
        ["--reconcile-interval", "0"],
        ["--reconcile-interval", "soon"],
    ],
)
def test_contradictions_and_nonsense_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2


def test_main_runs_kopf_with_the_registry_and_the_deps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(
        kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig)
    )
    monkeypatch.setattr(kopf, "configure", lambda **_: None)  # leave the test's logging be
    calls: list[dict[str, Any]] = []
    argv = ["-n", "team-a", "--cluster-domain", "k8s.example", "--reconcile-interval", "5"]
    assert main(argv, run=lambda **kwargs: calls.append(kwargs)) == 0
    (call,) = calls
    assert isinstance(call["registry"], kopf.OperatorRegistry)
    deps = call["memo"]["deps"]
    assert isinstance(deps, Deps)
    assert deps.cluster_domain == "k8s.example"
    assert call["namespaces"] == ["team-a"]
    assert "clusterwide" not in call


def test_main_without_credentials_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(
        kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "none")
    )
    monkeypatch.setattr(kopf, "configure", lambda **_: None)
    assert main([], run=lambda **_: pytest.fail("kopf must not start")) == 1
    assert "no Kubernetes credentials" in capsys.readouterr().err
