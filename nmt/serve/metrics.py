"""What `GET /metrics` reports, in the Prometheus text format (prometheus_client)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from nmt.serve.scheduler import Events

disable_created_metrics()  # no *_created series: they double the output and say little

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)


class ServerMetrics:
    """Counters and histograms of one server process, in a registry of its own."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, queue_depth: Callable[[], float]):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "nmt_requests", "HTTP requests answered, by route and status", ["route", "status"],
            registry=r,
        )  # fmt: skip
        self.sentences = Counter("nmt_sentences", "Sentences translated", registry=r)
        self.dropped = Counter(
            "nmt_sentences_dropped", "Queued sentences dropped: their client had gone",
            registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "nmt_request_seconds", "Time from a translate request's arrival to its answer",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.step_size = Histogram(
            "nmt_step_sentences",
            "Sentences in the running batch at each search step (from any number of requests)",
            buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.step_seconds = Histogram(
            "nmt_step_seconds", "Time of one search step of the running batch",
            buckets=STEP_BUCKETS, registry=r,
        )  # fmt: skip
        depth = Gauge("nmt_queue_depth", "Sentences waiting or being decoded", registry=r)
        depth.set_function(queue_depth)

    def events(self) -> Events:
        """The scheduler's hooks into these metrics."""

        def step(lines: int, finished: int, seconds: float) -> None:
            self.step_size.observe(lines)
            self.step_seconds.observe(seconds)
            self.sentences.inc(finished)

        return Events(step=step, dropped=self.dropped.inc)

    def render(self) -> bytes:
        return generate_latest(self.registry)
