"""The cache role's Prometheus metrics, registered on the node's own registry.

Counters mirror `/cache/stats` (hits, misses, evictions, invalidations and bus reads by
direction, write-backs, renewals); the histograms give GET and PUT/DELETE latency; the
gauges count local lines per MESI state (refreshed by the node's tick loop) and the
slots this node holds (refreshed by its slot loop).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class CacheMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.hits = Counter("distcluster_cache_hits", "Reads served locally", registry=r)
        self.misses = Counter("distcluster_cache_misses", "Reads sent to the home", registry=r)
        self.evictions = Counter("distcluster_cache_evictions", "Lines evicted", registry=r)
        self.inval = Counter(
            "distcluster_cache_invalidations", "Invalidations", ["direction"], registry=r
        )
        self.bus = Counter("distcluster_cache_bus_reads", "Bus reads", ["direction"], registry=r)
        self.write_backs = Counter(
            "distcluster_cache_write_backs", "Write-backs of M lines", registry=r
        )
        self.renewals = Counter(
            "distcluster_cache_renewals", "Copies sent for renewal, by outcome", ["outcome"],
            registry=r,
        )  # fmt: skip
        self.get_s = Histogram(
            "distcluster_cache_get_seconds", "GET latency", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.put_s = Histogram(
            "distcluster_cache_put_seconds",
            "PUT and DELETE latency",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.home_slots = Gauge(
            "distcluster_cache_home_slots", "Slots this node holds (acts as home of)", registry=r
        )
        self.lines = Gauge("distcluster_cache_lines", "Lines per state", ["state"], registry=r)
