"""Offset helpers of the admin module on a topic that does not exist: an empty answer, not
aiokafka's CancelledError from stopping a consumer right after starting it (``streams tables
list`` asks for the end offsets of every changelog, existing or not)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from streams.kafka import admin

pytestmark = pytest.mark.broker


def test_offsets_of_a_missing_topic_are_empty(kafka: str) -> None:
    topic = f"admin-offsets-missing-{uuid.uuid4().hex[:8]}"

    async def run() -> tuple[dict, dict]:
        ends = await admin.end_offsets(kafka, topic)
        reset = await admin.reset_group_to_earliest(kafka, f"{topic}-group", [topic])
        return ends, reset

    # several rounds: the failure depended on the scheduling of aiokafka's start-up tasks
    for _ in range(5):
        assert asyncio.run(run()) == ({}, {})
