"""The RPC latency histogram is exported exactly like prometheus-client's Histogram."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from fabric.metrics import LatencyHistogram

BUCKETS = (0.001, 0.01, 0.1)


def _lines(registry: CollectorRegistry, name: str) -> list[str]:
    text = generate_latest(registry).decode()
    return sorted(line.replace(name, "NAME") for line in text.splitlines()
                  if line.startswith(name) and "_created" not in line)


def test_same_exposition_as_prometheus_histogram() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = LatencyHistogram("fast_seconds", "doc", "method", BUCKETS, registry=ours)
    reference = Histogram("ref_seconds", "doc", ["method"], buckets=BUCKETS, registry=theirs)
    for method, value in [("a", 0.0005), ("a", 0.001), ("a", 0.005), ("b", 0.05), ("a", 0.5),
                          ("b", 0.01), ("b", 7.0)]:
        fast.labels(method).observe(value)
        reference.labels(method).observe(value)
    assert _lines(ours, "fast_seconds") == _lines(theirs, "ref_seconds")
    assert any('le="+Inf",method="b"} 3.0' in line for line in _lines(ours, "fast_seconds"))
