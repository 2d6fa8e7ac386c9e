"""Prometheus metrics of the server's workers, summed: `JumpQueueCollector` (extra `prometheus`).

    from prometheus_client import REGISTRY
    from jumpqueue.prometheus import JumpQueueCollector

    REGISTRY.register(JumpQueueCollector())

With `status_dir` set (see `Config`), one scrape of any worker gives the sum
over all of the server's workers, plus gauges per worker labelled by `pid`;
without it, this process alone. The names: `jumpqueue_calls_total{outcome,task}`,
`jumpqueue_shed_total{policy}`, `jumpqueue_run_seconds` and
`jumpqueue_wait_seconds` (histograms by task), the gauges `jumpqueue_held`,
`_pending`, `_running`, `_workers`, `_stuck_threads`, `_journal_backlog`, and
per worker `jumpqueue_worker_*{pid}`. The status page's `?openmetrics` gives the
same families without this library.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from . import _status
from ._default import get_runtime
from ._runtime import Runtime
from ._runtime.reporting import want_status

__all__ = ["JumpQueueCollector"]


class JumpQueueCollector(Collector):
    """A custom collector reading the status report at each scrape.

    Args:
        runtime: the runtime to report on; None for the default one.
    """

    def __init__(self, runtime: Runtime | None = None) -> None:
        self._runtime = runtime
        want_status()

    def describe(self) -> Iterator[Metric]:
        """Nothing: registering the collector must not read the report (nor start reporting)."""
        return iter(())

    def collect(self) -> Iterator[Metric]:
        """The metric families of the report, made now."""
        report = _status.collect(self._runtime or get_runtime())
        for family in _status.families(report):
            names = list(family.samples[0][0]) if family.samples else []
            metric: CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily
            if family.kind == "counter":
                metric = CounterMetricFamily(family.name, family.help, labels=names)
            elif family.kind == "gauge":
                metric = GaugeMetricFamily(family.name, family.help, labels=names)
            else:
                metric = HistogramMetricFamily(family.name, family.help, labels=names)
            for labels, value in family.samples:
                values = [labels[name] for name in names]
                if isinstance(metric, HistogramMetricFamily):
                    counts, total = value
                    metric.add_metric(values, _status.cumulative(counts), total)
                else:
                    metric.add_metric(values, value)
            yield metric
