"""A worker refuses to start when topics it reads together are not co-partitioned."""

from __future__ import annotations

import asyncio

import pytest

from streams import Topology
from streams.config import Settings
from streams.kafka import admin
from streams.kafka.admin import TopicSpec
from streams.runtime.worker import Worker, WorkerFailed

pytestmark = pytest.mark.broker


def test_mismatched_partition_counts_are_refused(kafka: str, tmp_path) -> None:
    t = Topology("copart_check")
    t.store("seen")
    t.stream("copart-a").process(lambda k, v, s: None, stores=["seen"])
    t.stream("copart-b").process(lambda k, v, s: None, stores=["seen"])
    admin.run(admin.delete_topics(kafka, ["copart-a", "copart-b"]))
    admin.run(admin.ensure_topics(kafka, [TopicSpec("copart-a", 2), TopicSpec("copart-b", 3)]))
    worker = Worker(t, Settings(broker=kafka, state_dir=str(tmp_path), metrics_port=-1))
    with pytest.raises(WorkerFailed, match="co-partitioned"):
        asyncio.run(worker.run())
