"""serve's numbers: units by kind and status (a Reporter of every run serve makes), API
requests and bytes, deliveries by event and outcome, the inbox's depth and oldest item's age,
as one prometheus_client registry for GET /metrics and --metrics-file alike."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import anyio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.manifest import Record, Status
from exporter.progress import Waits
from exporter.stats import Stats


class ServeReporter:
    """Counts every manifest line of every run serve makes; keeps their Stats for totals."""

    def __init__(self) -> None:
        self.units: Counter[tuple[str, str]] = Counter()
        self.bytes = 0
        self._done_api = 0  # API requests of the runs that ended
        self._stats: Stats | None = None

    def recorded(self, rec: Record) -> None:
        self.units[rec.kind, rec.status.value] += 1
        if rec.status is Status.EXPORTED:
            self.bytes += rec.bytes or 0

    async def run(self, stats: Stats, pacer: Waits) -> None:
        if self._stats is not None:
            self._done_api += self._stats.api_requests
        self._stats = stats
        await anyio.sleep_forever()

    @property
    def api_requests(self) -> int:
        return self._done_api + (self._stats.api_requests if self._stats else 0)


class ServeMetrics(Collector):
    def __init__(self, reporter: ServeReporter, deliveries: Counter[tuple[str, str]]) -> None:
        self._reporter = reporter
        self._deliveries = deliveries
        self.inbox_items = 0
        self.inbox_oldest_age = 0.0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        d = CounterMetricFamily(
            "rtk_export_webhook_deliveries",
            "Deliveries received, by event and outcome",
            labels=["event", "outcome"],
        )
        for (event, outcome), n in sorted(self._deliveries.items()):
            d.add_metric([event, outcome], n)
        yield d
        u = CounterMetricFamily(
            "rtk_export_units",
            "Manifest lines written, by kind and status",
            labels=["kind", "status"],
        )
        for (kind, status), n in sorted(self._reporter.units.items()):
            u.add_metric([kind, status], n)
        yield u
        yield GaugeMetricFamily("rtk_export_inbox_items", "Deliveries waiting", self.inbox_items)
        yield GaugeMetricFamily(
            "rtk_export_inbox_oldest_age_seconds",
            "Age of the oldest delivery waiting",
            self.inbox_oldest_age,
        )
        yield CounterMetricFamily(
            "rtk_export_api_requests", "API requests made", self._reporter.api_requests
        )
        yield CounterMetricFamily("rtk_export_bytes", "Bytes exported", self._reporter.bytes)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
