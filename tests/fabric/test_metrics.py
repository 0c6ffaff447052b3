"""The RPC latency histogram is exported exactly like prometheus-client's Histogram, and counts
every observation, however many threads observe."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from fabric.metrics import FOLD_EVERY, LatencyHistogram

BUCKETS = (0.001, 0.01, 0.1)


def _lines(registry: CollectorRegistry, name: str) -> list[str]:
    text = generate_latest(registry).decode()
    return sorted(
        line.replace(name, "NAME")
        for line in text.splitlines()
        if line.startswith(name) and "_created" not in line
    )


def test_same_exposition_as_prometheus_histogram() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = LatencyHistogram("fast_seconds", "doc", "method", BUCKETS, registry=ours)
    reference = Histogram("ref_seconds", "doc", ["method"], buckets=BUCKETS, registry=theirs)
    for method, value in [
        ("a", 0.0005),
        ("a", 0.001),
        ("a", 0.005),
        ("b", 0.05),
        ("a", 0.5),
        ("b", 0.01),
        ("b", 7.0),
    ]:
        fast.labels(method).observe(value)
        reference.labels(method).observe(value)
    assert _lines(ours, "fast_seconds") == _lines(theirs, "ref_seconds")
    assert any('le="+Inf",method="b"} 3.0' in line for line in _lines(ours, "fast_seconds"))


def test_observations_from_many_threads_are_all_counted() -> None:
    registry = CollectorRegistry()
    fast = LatencyHistogram("fast_seconds", "doc", "method", BUCKETS, registry=registry)
    per_thread = FOLD_EVERY * 10 + 7  # several folds on the way, and some left pending

    def observe() -> None:
        child = fast.labels("m")
        for i in range(per_thread):
            child.observe(0.005 if i % 2 else 0.5)

    threads = [threading.Thread(target=observe) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = _lines(registry, "fast_seconds")
    total = 4 * per_thread
    assert f'NAME_count{{method="m"}} {float(total)}' in lines
    assert f'NAME_bucket{{le="0.01",method="m"}} {float(4 * (per_thread // 2))}' in lines
