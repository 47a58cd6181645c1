"""Prometheus metrics of a worker (names are a public contract; all carry ``topology``)."""

from __future__ import annotations

import logging
from importlib import metadata

from prometheus_client import (CollectorRegistry, Counter, Gauge, GCCollector, Histogram, Info,
                               PlatformCollector, ProcessCollector)

from .dsl.topology import Topology

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Finer at the low end: latency mode lives between 1 and 50 ms.
_E2E_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1,
                2.5, 5, 10, 30, 60, 300)


class Metrics:
    def __init__(self, topology: str) -> None:
        self.topology = topology
        self.registry = r = CollectorRegistry()
        t = ["topology"]
        self.consumed = Counter("streams_events_consumed_total", "Input records consumed",
                                t + ["topic", "partition"], registry=r)
        self.produced = Counter("streams_events_produced_total", "Records produced",
                                t + ["topic"], registry=r)
        self.lag = Gauge("streams_consumer_lag",
                         "Records not processed yet: last stable offset (read_committed) minus "
                         "the processed position, trailing transaction markers excluded",
                         t + ["topic", "partition"], registry=r)
        self._lag_partitions: set[tuple[str, int]] = set()
        self.processing = Histogram("streams_processing_seconds", "Time to process one batch",
                                    t, registry=r, buckets=_LATENCY_BUCKETS)
        self.e2e = Histogram("streams_end_to_end_latency_seconds",
                             "Wall time from an output record's timestamp (its input's event "
                             "time) until the broker acknowledged the output (sampled)", t,
                             registry=r, buckets=_E2E_BUCKETS)
        self.commits = Counter("streams_commits_total", "Commits", t, registry=r)
        self.commit_failures = Counter("streams_commit_failures_total",
                                       "Commits that did not complete (a failed send or flush "
                                       "stops the worker; an offset commit can fail in a "
                                       "rebalance)", t, registry=r)
        self.commit_seconds = Histogram("streams_commit_seconds", "Commit duration", t,
                                        registry=r, buckets=_LATENCY_BUCKETS)
        self.transactions = Counter("streams_transactions_total", "Kafka transactions",
                                    t + ["result"], registry=r)
        self.table_keys = Gauge("streams_table_keys", "Approximate keys per table (local tasks)",
                                t + ["table"], registry=r)
        self.late = Counter("streams_late_events_total", "Records dropped as late", t + ["node"],
                            registry=r)
        self.dead_letters = Counter("streams_dead_letters_total", "Records sent to the DLQ",
                                    t + ["reason"], registry=r)
        self.dropped = Counter("streams_dropped_records_total",
                               "Records an operator skips by design (null value or key in an "
                               "aggregation, no matching branch)", t + ["node", "reason"],
                               registry=r)
        self.rebalances = Counter("streams_rebalances_total", "Partition assignments", t,
                                  registry=r)
        self.recovery_remaining = Gauge("streams_recovery_records_remaining",
                                        "Changelog records left to restore", t + ["table"],
                                        registry=r)
        # streams_worker_info{topology, version, guarantee, ...} 1 (set by describe_worker)
        self.info = Info("streams_worker", "The worker: its topology, the topology's declared "
                         "version, the delivery guarantee, processing mode, framework version",
                         t, registry=r)
        # process_* (CPU, memory, open files) and python_info / python_gc_* of this worker
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

    def describe_worker(self, version: str, guarantee: str, processing_mode: str,
                        endpoint: str | None) -> None:
        """Set ``streams_worker_info``: one series per worker, value 1, facts as labels (join
        it in PromQL to break other series down by version or guarantee)."""
        try:
            framework = metadata.version("streams")
        except metadata.PackageNotFoundError:  # (run from a source tree)
            framework = "unknown"
        self.info.labels(self.topology).info({
            "version": version, "guarantee": guarantee, "processing_mode": processing_mode,
            "streams_version": framework, "endpoint": endpoint or ""})

    def initialise(self, topology: Topology) -> None:
        """Export every label value known up front at 0, so that dashboards and alerts see a
        series (and ``rate()``/``increase()`` count the first events) before anything
        happened."""
        t = self.topology
        for name in ("committed", "aborted"):
            self.transactions.labels(t, name)
        for table in topology.stores:
            self.table_keys.labels(t, table).set(0)
            self.recovery_remaining.labels(t, table).set(0)
        for node in topology.nodes():
            if getattr(node, "window", None) is not None:
                self.late.labels(t, node.name)
        for topic in topology.output_topics():
            self.produced.labels(t, topic)
        for reason in ("decode", "invalid"):  # exported from 0, so rate() sees the first one
            self.dead_letters.labels(t, reason)
        for family in (self.commits, self.commit_failures, self.processing, self.e2e,
                       self.commit_seconds):
            family.labels(t)
        self.rebalances.labels(t)

    def count_task_events(self, dead_letters: dict[str, int],
                          dropped: dict[tuple[str, str], int], late: dict[str, int]) -> None:
        """Move a task's per-batch counters into the metrics (and reset them)."""
        t = self.topology
        for reason, k in dead_letters.items():
            self.dead_letters.labels(t, reason).inc(k)
        for (node, reason), k in dropped.items():
            self.dropped.labels(t, node, reason).inc(k)
        for node, k in late.items():
            self.late.labels(t, node).inc(k)
        dead_letters.clear()
        dropped.clear()
        late.clear()

    def set_lag(self, lags: dict[tuple[str, int], int], complete: bool = False) -> None:
        """Set ``streams_consumer_lag`` per (topic, partition). ``complete``: ``lags`` covers
        every partition this worker owns, so the series of the others are removed (their new
        owner reports them; a stale value here would add to its)."""
        t = self.topology
        for (topic, partition), lag in lags.items():
            self.lag.labels(t, topic, str(partition)).set(lag)
        if complete:
            for topic, partition in self._lag_partitions - set(lags):
                try:
                    self.lag.remove(t, topic, str(partition))
                except KeyError:
                    pass
            self._lag_partitions = set(lags)
        else:
            self._lag_partitions.update(lags)
