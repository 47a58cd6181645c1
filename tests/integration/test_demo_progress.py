"""The demo's view of a run (streams.devtools.demo): a group is caught up when its committed
offsets reach the end offsets — on an exactly-once topic, where trailing transaction markers
keep the end past the last record, too — and "this run" is the records after the marked
offsets. On the shared broker, on a topic and group of their own."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.devtools import demo
from streams.kafka import admin


async def _produce_in_transaction(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap,
                                transactional_id=f"{topic}-txn", enable_idempotence=True)
    await producer.start()
    try:
        async with producer.transaction():
            for v in values:
                await producer.send(topic, v, key=b"k", partition=0)
    finally:
        await producer.stop()


async def _commit(bootstrap: str, group: str, topic: str, offset: int) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.commit({tp: offset})
    finally:
        await consumer.stop()


def test_caught_up_past_trailing_markers_and_this_runs_records(kafka: str) -> None:
    topic, group = f"demo-progress-{uuid.uuid4().hex[:8]}", f"demo-progress-{uuid.uuid4().hex[:8]}"
    try:
        admin.run(admin.ensure_topics(kafka, [admin.TopicSpec(topic, 1)]))
        asyncio.run(_produce_in_transaction(kafka, topic, [b'{"n": 1}', b'{"n": 2}']))
        marks = admin.run(demo.end_offsets(kafka, [topic]))
        assert marks == {topic: {0: 3}}  # two records and a commit marker
        asyncio.run(_produce_in_transaction(kafka, topic, [b'{"n": 3}', b'{"n": 4}',
                                                           b'{"n": 5}']))
        # this run: the three records after the marks, not the whole topic's five
        assert [r.value for r in admin.run(demo.read_since(kafka, topic, marks[topic]))] == \
            [{"n": 3}, {"n": 4}, {"n": 5}]
        # offsets 3-5 are records, 6 the marker: end 7
        asyncio.run(_commit(kafka, group, topic, 4))
        assert admin.run(demo.behind(kafka, group, [topic])) == {(topic, 0): 3}
        # committed after the last record: only the marker is left, which no consumer sees
        asyncio.run(_commit(kafka, group, topic, 6))
        assert admin.run(demo.behind(kafka, group, [topic])) == {}
        assert admin.run(demo.wait_caught_up(kafka, group, [topic], timeout=30,
                                             say=lambda _: None))
    finally:
        admin.run(admin.delete_topics(kafka, [topic]))
