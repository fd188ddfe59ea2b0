"""Load balance: the most loaded member carries at most 1.15x the mean, by default."""

from __future__ import annotations

from collections import Counter

from distcluster_worker.ring import HashRing

MAX_OVER_MEAN = 1.15


def test_three_members_100k_topics_by_default() -> None:
    ring = HashRing(["node1", "node2", "node3"])
    counts = Counter(ring.owner(f"topic-{i}") for i in range(100_000))
    mean = 100_000 / 3
    ratio = max(counts.values()) / mean
    print(f"\n3 members, 100k topics: counts={dict(counts)} max/mean={ratio:.4f}")
    assert ratio <= MAX_OVER_MEAN
    assert min(counts.values()) / mean >= 2 - MAX_OVER_MEAN


def test_exact_shares_stay_balanced_for_typical_names() -> None:
    # Exact key-space shares (no sampling noise) for the names deployments use.
    names = [[f"node{i}" for i in range(1, n + 1)] for n in range(2, 8)] + [
        [f"distcluster-{i}" for i in range(n)] for n in range(2, 8)
    ]
    worst = 0.0
    for members in names:
        shares = HashRing(members).shares()
        worst = max(worst, max(shares.values()) * len(members))
    print(f"\nworst exact max/mean over {len(names)} member sets: {worst:.4f}")
    assert worst <= MAX_OVER_MEAN
