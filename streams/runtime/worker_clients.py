"""What a worker talks to Kafka with: its group consumer, its shared producer and transport,
and the committer of its delivery guarantee — the one place the guarantee is read
(:func:`committer_for`)."""

from __future__ import annotations

import os
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from ..config import Settings
from ..dsl.topology import Topology
from ..kafka.clients import KafkaConnection, client_kwargs
from ..metrics import Metrics
from .assignor import EndpointMap, ShapeCheckingAssignor
from .committer import AtLeastOnce, Committer, ExactlyOnce, is_exactly_once
from .global_tables import GlobalTableConsumer, GlobalTables
from .transactions import FAIL_COMMIT_ENV, TaskTransactions
from .transport import KafkaTransport
from .tuning import Tuning

#: Every input is read read_committed: under exactly-once the records of open and aborted
#: transactions are never processed (under at-least-once nothing writes transactions).
ISOLATION_LEVEL = "read_committed"


def group_consumer(topology: Topology, settings: Settings, kafka: KafkaConnection, tune: Tuning,
                   refused: Callable[[str], None], endpoint: str | None = None,
                   on_endpoints: Callable[[EndpointMap], None] | None = None,
                   local_tasks: Callable[[], dict[str, int]] | None = None,
                   on_standby: Callable[[list[str]], None] | None = None) -> AIOKafkaConsumer:
    """The consumer of the topology's group (named after the topology); ``refused`` is called
    when the group runs another shape of the topology (:mod:`streams.runtime.assignor`).
    ``endpoint``: where this worker serves its tables, told to the group; ``on_endpoints``:
    called with the group's endpoint map on every assignment; ``local_tasks`` reports this
    worker's task state and ``on_standby`` receives its standby tasks (standby replicas)."""
    s = settings
    assignor = ShapeCheckingAssignor(topology, refused, endpoint=endpoint,
                                     on_endpoints=on_endpoints,
                                     standby_replicas=s.num_standby_replicas,
                                     local_tasks=local_tasks, on_standby=on_standby)
    return AIOKafkaConsumer(
        **client_kwargs(kafka), group_id=topology.name, enable_auto_commit=False,
        auto_offset_reset="earliest", isolation_level=ISOLATION_LEVEL,
        partition_assignment_strategy=(assignor,),
        max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_wait_ms=tune.fetch_max_wait_ms,
        session_timeout_ms=s.session_timeout_ms,
        heartbeat_interval_ms=max(100, s.session_timeout_ms // 5), max_poll_interval_ms=300000,
        request_timeout_ms=max(s.request_timeout_ms, s.session_timeout_ms + 5000))


def producer_factory(settings: Settings, kafka: KafkaConnection,
                     tune: Tuning) -> Callable[[], AIOKafkaProducer]:
    """Builds the shared (at-least-once) producer; a new one replaces it after a failed
    commit."""

    def new_producer() -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **client_kwargs(kafka), acks="all", enable_idempotence=True,
            linger_ms=tune.linger_ms, max_batch_size=512 * 1024,
            request_timeout_ms=settings.request_timeout_ms)

    return new_producer


def shared_transport(topology: Topology, metrics: Metrics, consumer: AIOKafkaConsumer,
                     new_producer: Callable[[], AIOKafkaProducer]) -> KafkaTransport:
    name, m = topology.name, metrics
    produced = m.produced
    return KafkaTransport(
        new_producer(), consumer,
        on_produced=lambda topic, n: produced.labels(name, topic).inc(n),
        on_latency=m.e2e.labels(name).observe, latency_topics=topology.output_topics(),
        on_commit_failed=m.commit_failures.labels(name).inc, producer_factory=new_producer)


def global_table_consumer(tables: GlobalTables, kafka: KafkaConnection, metrics: Metrics,
                          stopping: Callable[[], bool]) -> GlobalTableConsumer:
    name, remaining, keys = metrics.topology, metrics.recovery_remaining, metrics.table_keys
    return GlobalTableConsumer(
        tables, kafka, on_remaining=lambda table, n: remaining.labels(name, table).set(n),
        on_keys=lambda table, n: keys.labels(name, table).set(n), stopping=stopping)


def committer_for(topology: Topology, settings: Settings, kafka: KafkaConnection,
                  metrics: Metrics, transport: KafkaTransport) -> Committer:
    """The committer of ``settings.processing_guarantee`` (config/<topology>.toml)."""
    if not is_exactly_once(settings.processing_guarantee):
        return AtLeastOnce(transport)
    s, name = settings, topology.name
    produced, results = metrics.produced, metrics.transactions
    return ExactlyOnce(TaskTransactions(
        name, name, kafka, transaction_timeout_ms=s.transaction_timeout_ms,
        request_timeout_ms=s.request_timeout_ms,
        commit_timeout_s=max(10.0, 3 * s.effective_commit_interval_ms / 1000),
        on_produced=lambda topic, n: produced.labels(name, topic).inc(n),
        on_result=lambda result: results.labels(name, result).inc(),
        on_latency=metrics.e2e.labels(name).observe, latency_topics=topology.output_topics(),
        fail_commit=os.environ.get(FAIL_COMMIT_ENV) or None))


__all__ = ["ISOLATION_LEVEL", "committer_for", "global_table_consumer", "group_consumer",
           "producer_factory", "shared_transport"]
