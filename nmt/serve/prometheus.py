"""What `GET /metrics` reports, in the Prometheus text format (prometheus_client).

With `serve.workers` > 1 every worker answers for the whole server: the supervisor gives the
workers one directory in PROMETHEUS_MULTIPROC_DIR, where prometheus_client keeps each
process's values (memory-mapped files), and a scrape sums them over the workers, whichever
of them the connection reached. Without that, each scrape would count only the requests of
the one worker it reached.
"""

from __future__ import annotations

import os

import torch
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from nmt.serve.scheduler import Events

disable_created_metrics()  # no *_created series: they double the output and say little

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client when it is imported
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)


class ServerMetrics:
    """Counters, gauges and histograms of one server process, in a registry of its own; a
    scrape reads them from every worker when the process is one of several."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = CollectorRegistry()
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
        # gauges summed over the live workers ("livesum"; one process is a sum of one)
        self.depth = Gauge(
            "nmt_queue_depth", "Sentences waiting or being decoded",
            multiprocess_mode="livesum", registry=r,
        )  # fmt: skip
        workers = Gauge(
            "nmt_workers", "Server processes answering on the port (serve.workers)",
            multiprocess_mode="livesum", registry=r,
        )  # fmt: skip
        workers.set(1)
        self.threads = Gauge(
            "nmt_threads", "CPU threads the decoders use now (torch's intra-op threads)",
            multiprocess_mode="livesum", registry=r,
        )  # fmt: skip
        self.threads.set(torch.get_num_threads())
        self._scraped = r  # this process's values, or with several workers all of theirs:
        if os.environ.get(MULTIPROC_ENV):
            self._scraped = CollectorRegistry()
            MultiProcessCollector(self._scraped)

    def events(self) -> Events:
        """The scheduler's hooks into these metrics."""

        def step(lines: int, finished: int, seconds: float) -> None:
            self.step_size.observe(lines)
            self.step_seconds.observe(seconds)
            self.sentences.inc(finished)
            self.threads.set(torch.get_num_threads())  # as `threads.CoreShare` last chose

        return Events(step=step, dropped=self.dropped.inc, depth=self.depth.set)

    def render(self) -> bytes:
        return generate_latest(self._scraped)
