"""The usage writer's counters as Prometheus series, on the app's own registry (registered by the app when
metrics are on)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.usage.writer import Counters


class UsageCollector:
    def __init__(self, counters: Counters, depth: Callable[[], int], namespace: str = "llmgw") -> None:
        self.counters = counters
        self.depth = depth
        self.namespace = namespace

    def collect(self) -> Iterator[Metric]:
        c, ns = self.counters, self.namespace
        written = CounterMetricFamily(f"{ns}_usage_rows_written", "Usage rows written to the store.")
        written.add_metric([], c.written)
        dropped = CounterMetricFamily(
            f"{ns}_usage_rows_dropped",
            "Usage rows lost: `queue_full` when the queue was full (or left at shutdown), `refused` when the store "
            "refused a batch as bad.",
            labels=["reason"],
        )
        dropped.add_metric(["queue_full"], c.dropped)
        dropped.add_metric(["refused"], c.failed)
        errors = CounterMetricFamily(f"{ns}_usage_write_errors", "Failed attempts to write a batch (retried).")
        errors.add_metric([], c.write_errors)
        depth = GaugeMetricFamily(f"{ns}_usage_queue_depth", "Usage rows waiting for the writer.")
        depth.add_metric([], self.depth())
        up = GaugeMetricFamily(f"{ns}_usage_store_up", "1 while the last write to the usage store succeeded.")
        up.add_metric([], 1 if c.store_up else 0)
        yield from (written, dropped, errors, depth, up)
