"""The shell's HTTP metrics: what a Prometheus scrape of them reads."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from distcluster_worker.shell.metrics import NodeMetrics


def _samples(metrics: NodeMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_requests_are_counted_by_method_route_and_status() -> None:
    metrics = NodeMetrics()
    for status in (200, 200, 423):
        metrics.observe_request("POST", "/lock/acquire", status, 0.002)
    metrics.observe_request("GET", "/health", 200, 0.0001)
    samples = _samples(metrics)
    name = "distcluster_http_requests_total"
    acquire = (("method", "POST"), ("route", "/lock/acquire"))
    assert samples[(name, (*acquire, ("status", "200")))] == 2
    assert samples[(name, (*acquire, ("status", "423")))] == 1
    assert samples[(name, (("method", "GET"), ("route", "/health"), ("status", "200")))] == 1


def test_latency_buckets_are_cumulative_and_a_bound_counts_in_its_own_bucket() -> None:
    metrics = NodeMetrics()
    for seconds in (0.001, 0.0011, 0.02, 30.0):
        metrics.observe_request("POST", "/lock/release", 200, seconds)
    samples = _samples(metrics)
    route = (("method", "POST"), ("route", "/lock/release"))

    def bucket(le: str) -> float:
        return samples[("distcluster_http_request_duration_seconds_bucket", (("le", le), *route))]

    assert [bucket(le) for le in ("0.001", "0.0025", "0.025", "10.0", "+Inf")] == [1, 2, 3, 3, 4]
    assert samples[("distcluster_http_request_duration_seconds_count", route)] == 4
    total = samples[("distcluster_http_request_duration_seconds_sum", route)]
    assert abs(total - 30.0221) < 1e-9
