"""Two exactly-once guarantees no other test pins down, against the real broker:

* the worker's input consumer reads ``read_committed``: records of an aborted transaction on an
  input topic are never processed;
* opening a task's producer waits for its InitProducerId: once the next owner has opened the
  task, its producer is initialised and the previous owner's open transaction is over (the
  opener reads the group's offsets and the changelog ends only after that); the previous
  owner cannot commit it any more.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from streams.kafka import admin
from streams.runtime.task import Output
from streams.runtime.transactions import classify, kafka_producers, transactional_id
from streams.state.meta import TaskId

from tests.integration.eos_support import (InProcessWorker, counting_topology, create_topics,
                                           delete_topics, eos_settings, produce, read_all,
                                           wait_for)

pytestmark = pytest.mark.broker


async def _aborted(kafka: str, topic: str, seqs: range) -> None:
    """Records of ``seqs`` written in a transaction that is then aborted."""
    p = AIOKafkaProducer(bootstrap_servers=kafka, transactional_id=f"{topic}-aborting",
                         enable_idempotence=True, acks="all")
    await p.start()
    try:
        await p.begin_transaction()
        futs = [await p.send(topic, json.dumps({"seq": s}).encode(), key=b"k") for s in seqs]
        await asyncio.gather(*futs)
        await p.abort_transaction()
    finally:
        await p.stop()


def test_records_of_an_aborted_input_transaction_are_never_processed(
        kafka: str, tmp_path: Path) -> None:
    topology, source, sink = counting_topology()
    create_topics(kafka, topology, 1)
    settings = eos_settings(kafka, tmp_path / "state", partitions=1)

    async def scenario() -> list[Any]:
        await produce(kafka, source, [("k", {"seq": s}) for s in range(0, 5)])
        await _aborted(kafka, source, range(100, 105))
        await produce(kafka, source, [("k", {"seq": s}) for s in range(5, 10)])
        async with InProcessWorker(topology, settings):
            async def all_committed_processed() -> bool:
                return len(await read_all(kafka, sink)) >= 10
            await wait_for(all_committed_processed, 60, "the 10 committed inputs processed")
        return await read_all(kafka, sink)

    try:
        outputs = [json.loads(r.value) for r in asyncio.run(scenario())]
        assert [(o["seq"], o["n"]) for o in outputs] == [(s, s + 1) for s in range(10)]
    finally:
        delete_topics(kafka, topology)


def test_the_previous_owner_cannot_commit_once_the_next_owner_opened_the_task(
        kafka: str) -> None:
    topology, source, sink = counting_topology()
    create_topics(kafka, topology, 1)
    txn_id = transactional_id(topology.name, TaskId("0", 0))
    open_producer = kafka_producers(kafka, transaction_timeout_ms=60000)

    async def scenario() -> tuple[bool, BaseException | None]:
        old = await open_producer(txn_id)
        new = None
        try:
            # The previous owner's transaction is complete but for its commit...
            await old.begin()
            await old.send([Output(sink, 0, b"zombie", b"{}", None, [])])
            await old.flush()
            await old.send_offsets({(source, 0): 1}, topology.name)
            new = await open_producer(txn_id)  # ...when the next owner opens the task
            # Initialised when open returns (no await in between). The broker answers the
            # InitProducerId only once the open transaction is aborted, so without the wait
            # the id is not there yet: the first attempt gets CONCURRENT_TRANSACTIONS and is
            # retried after a backoff. (aiokafka has no public view of it.)
            initialised = new.producer._txn_manager.has_pid()  # type: ignore[attr-defined]
            try:
                await old.commit()
            except Exception as exc:  # noqa: BLE001 - the expected outcome
                return initialised, exc
            return initialised, None
        finally:
            await old.close()
            if new is not None:
                await new.close()

    try:
        initialised, failure = asyncio.run(scenario())
        assert initialised
        assert failure is not None and classify(failure) == "fenced", failure
        assert asyncio.run(read_all(kafka, sink)) == []
        committed = admin.run(admin.committed_offsets(kafka, topology.name, [source]))
        assert committed.get((source, 0)) is None
    finally:
        delete_topics(kafka, topology)
