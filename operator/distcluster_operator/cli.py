"""`distcluster-operator`: run the DistCluster operator (kopf) until it is stopped.

    distcluster-operator                                  # every namespace, kopf's peering default
    distcluster-operator --namespace team-a --namespace team-b
    distcluster-operator --all-namespaces --liveness=http://0.0.0.0:8080/healthz
    distcluster-operator --peering distcluster            # one active operator among replicas

One active operator: with `--peering NAME` the operators sharing the peering object (a
ClusterKopfPeering with `--all-namespaces`, a KopfPeering per namespace otherwise; both CRDs
must be installed) see each other and only the one of highest `--priority` works while the
others pause, and the peering is mandatory: without its object the operator waits rather than
running unsupervised. `--standalone` turns peering off (for a single replica, as the
operator Deployment runs with its Recreate strategy). With neither, kopf's default applies:
the `default` peering object when it exists, standalone otherwise.

The operator's own API client (`kube.Kube`) and kopf's login both use the official client's
configuration: the pod's service account in a cluster, the kubeconfig elsewhere.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

import kopf
from kubernetes.config import ConfigException

from distcluster_operator.builders import DEFAULT_CLUSTER_DOMAIN
from distcluster_operator.handlers import DEFAULT_INTERVAL_S, Deps, build_registry
from distcluster_operator.kube import Kube


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; `--namespace` and `--all-namespaces`, `--peering` and
    `--standalone` exclude each other."""
    parser = argparse.ArgumentParser(
        prog="distcluster-operator", description="Reconcile DistCluster resources (kopf)."
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        dest="namespaces",
        metavar="NS",
        help="watch this namespace (repeatable); default: all namespaces",
    )
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="watch every namespace (default)"
    )
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument("--peering", metavar="NAME", help="kopf peering object; mandatory")
    peering.add_argument("--standalone", action="store_true", help="no peering at all")
    parser.add_argument("--priority", type=int, help="peering priority (highest one works)")
    parser.add_argument("--liveness", metavar="URL", help="kopf's liveness endpoint to serve")
    parser.add_argument(
        "--reconcile-interval",
        type=_positive_seconds,
        default=DEFAULT_INTERVAL_S,
        metavar="SECONDS",
        help=f"how often each DistCluster is re-asserted (default {DEFAULT_INTERVAL_S:g})",
    )
    parser.add_argument(
        "--cluster-domain",
        default=DEFAULT_CLUSTER_DOMAIN,
        help=f"DNS suffix of the cluster, for PEERS (default {DEFAULT_CLUSTER_DOMAIN})",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log handler details")
    parser.add_argument("--debug", action="store_true", help="log kopf internals too")
    return parser.parse_args(argv)


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments for `kopf.run` that the command line decides."""
    options: dict[str, Any] = {
        "liveness_endpoint": args.liveness,
        "priority": args.priority,
        "peering_name": args.peering,
        "standalone": True if args.standalone else None,
    }
    if args.namespaces:
        options["namespaces"] = list(args.namespaces)
    else:
        options["clusterwide"] = True
    return options


def main(argv: Sequence[str] | None = None, *, run: Callable[..., Any] = kopf.run) -> int:
    """The console script; 1 without credentials. `run` is kopf's, replaced only by the
    command-line tests."""
    args = parse_args(argv)
    kopf.configure(verbose=args.verbose, debug=args.debug)
    try:
        kube = Kube.from_environment()
    except ConfigException as exc:
        print(f"distcluster-operator: no Kubernetes credentials: {exc}", file=sys.stderr)
        return 1
    deps = Deps(kube=kube, cluster_domain=args.cluster_domain)
    run(
        registry=build_registry(interval_s=args.reconcile_interval),
        memo=kopf.Memo(deps=deps),
        **run_options(args),
    )
    return 0
