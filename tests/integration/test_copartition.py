"""A worker refuses to start when topics it reads together are not co-partitioned."""

from __future__ import annotations

import asyncio

import pytest

from streams import Topology
from streams.config import Settings
from streams.kafka import admin
from streams.kafka.admin import TopicSpec
from streams.runtime.topics import prepare_topics
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


def _sized() -> Topology:
    t = Topology("sized_check")
    t.stream("sized-clicks").group_by(lambda v: v["user"], name="by-user").count(name="per-user")
    return t


def test_internal_topics_take_the_partition_count_of_an_existing_input(kafka: str,
                                                                        tmp_path) -> None:
    t = _sized()
    admin.run(admin.delete_topics(kafka, ["sized-clicks", *t.internal_topics()]))
    admin.run(admin.ensure_topics(kafka, [TopicSpec("sized-clicks", 6)]))
    asyncio.run(prepare_topics(t, kafka, default_partitions=4))
    sizes = admin.run(admin.topic_partitions(kafka, t.internal_topics()))
    assert {name: len(parts) for name, parts in sizes.items()} == {
        "sized_check-by-user-repartition": 6, "sized_check-per-user-changelog": 6}


def test_an_internal_topic_of_the_wrong_size_is_refused(kafka: str, tmp_path) -> None:
    t = _sized()
    admin.run(admin.delete_topics(kafka, ["sized-clicks", *t.internal_topics()]))
    admin.run(admin.ensure_topics(kafka, [TopicSpec("sized-clicks", 6),
                                          TopicSpec("sized_check-per-user-changelog", 4)]))
    worker = Worker(t, Settings(broker=kafka, state_dir=str(tmp_path), metrics_port=-1))
    with pytest.raises(WorkerFailed, match="has 4 partitions but its sub-topology has 6 tasks"):
        asyncio.run(worker.run())


def test_join_inputs_with_different_partition_counts_are_refused(kafka: str, tmp_path) -> None:
    from streams import JoinWindows

    t = Topology("copart_join")
    t.stream("copart-orders").join(t.stream("copart-shipments"), lambda o, s: o,
                                   JoinWindows(before=0, after=1000), name="j").to("copart-out")
    admin.run(admin.delete_topics(kafka, ["copart-orders", "copart-shipments"]))
    admin.run(admin.ensure_topics(kafka, [TopicSpec("copart-orders", 4),
                                          TopicSpec("copart-shipments", 2)]))
    worker = Worker(t, Settings(broker=kafka, state_dir=str(tmp_path), metrics_port=-1))
    with pytest.raises(WorkerFailed) as failed:
        asyncio.run(worker.run())
    message = str(failed.value)
    assert "\n" not in message
    assert "co-partitioned" in message
    assert "'copart-orders': 4" in message and "'copart-shipments': 2" in message
