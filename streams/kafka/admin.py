"""Admin helpers over aiokafka: topics, consumer groups and offsets.

Async functions are the API; :func:`run` wraps one for synchronous callers (CLI, tests).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

from .clients import Kafka, KafkaConnection, client_kwargs

T = TypeVar("T")


class BrokerUnavailable(RuntimeError):
    """No broker answered at the configured address."""


class AuthenticationFailed(BrokerUnavailable):
    """The broker answered but refused the credentials (message names no secret)."""


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Replication:
    """Replication of created topics; ``"auto"`` adapts to the cluster's size.

    >>> Replication().resolve(brokers=1), Replication().resolve(brokers=5)
    ((1, 1), (3, 2))
    """

    factor: int | str = "auto"
    min_insync: int | str = "auto"

    @classmethod
    def from_settings(cls, settings: Any) -> Replication:
        return cls(settings.replication_factor, settings.min_insync_replicas)

    def resolve(self, brokers: int) -> tuple[int, int]:
        """(replication factor, min.insync.replicas) for a cluster of ``brokers``."""
        factor = min(3, max(1, brokers)) if self.factor == "auto" else int(self.factor)
        if factor > brokers:
            raise BrokerUnavailable(f"replication_factor {factor} needs at least {factor} "
                                    f"brokers, but the cluster has {brokers}")
        # Two in-sync copies survive one broker loss without refusing writes (acks=all).
        min_isr = (2 if factor >= 3 else 1) if self.min_insync == "auto" else int(self.min_insync)
        if min_isr > factor:
            raise BrokerUnavailable(f"min_insync_replicas {min_isr} is more than the "
                                    f"replication factor {factor}: no write could succeed")
        return factor, min_isr


async def _admin(bootstrap: Kafka, timeout_ms: int = 10000) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(**client_kwargs(bootstrap), request_timeout_ms=timeout_ms)
    try:
        await asyncio.wait_for(admin.start(), timeout_ms / 1000)
    except (TimeoutError, KafkaError, OSError) as exc:
        await admin.close()
        raise await unavailable(bootstrap, exc) from None
    return admin


async def unavailable(bootstrap: Kafka, exc: BaseException) -> BrokerUnavailable:
    """The one-line error for a client that could not connect, telling a refused login apart
    from a broker that does not answer. aiokafka only logs why a bootstrap connection failed,
    so on a secured cluster one connection is opened again to see the reason."""
    if isinstance(bootstrap, KafkaConnection) and bootstrap.security.protocol != "PLAINTEXT":
        reason = await _connect_error(bootstrap)
        if reason is not None and _is_auth_failure(reason):
            return AuthenticationFailed(
                f"the Kafka broker at {bootstrap} refused the credentials of "
                f"{bootstrap.security.sasl_username!r} ({type(reason).__name__}); check "
                f"security.sasl_username and ${bootstrap.security.sasl_password_env}")
        if isinstance(reason, ssl.SSLError):
            return BrokerUnavailable(f"TLS handshake with {bootstrap} failed: {reason.reason}")
    return BrokerUnavailable(f"no Kafka broker answers at {bootstrap} (start one with "
                             "`streams kafka start` or set STREAMS_BROKER)")


async def _connect_error(kafka: KafkaConnection) -> BaseException | None:
    kwargs = client_kwargs(kafka)
    host, _, port = kafka.bootstrap.split(",")[0].strip().rpartition(":")
    try:
        conn = await create_conn(
            host, int(port), request_timeout_ms=5000, ssl_context=kwargs.get("ssl_context"),
            security_protocol=kwargs["security_protocol"],
            sasl_mechanism=kwargs.get("sasl_mechanism"),
            sasl_plain_username=kwargs.get("sasl_plain_username"),
            sasl_plain_password=kwargs.get("sasl_plain_password"))
    except Exception as exc:  # noqa: BLE001 - the reason is what we are after
        return exc
    conn.close()
    return None


def _is_auth_failure(exc: BaseException) -> bool:
    name = type(exc).__name__
    return "Sasl" in name or "Authentication" in name or "Authorization" in name


def broker_answers(bootstrap: Kafka) -> bool:
    async def probe() -> bool:
        try:
            admin = await _admin(bootstrap, timeout_ms=3000)
        except AuthenticationFailed:
            raise
        except BrokerUnavailable:
            return False
        try:
            await admin.list_topics()
            return True
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            return False
        finally:
            await admin.close()

    return run(probe())


async def broker_count(bootstrap: Kafka) -> int:
    """How many brokers the answering broker knows to be alive in the cluster."""
    admin = await _admin(bootstrap, timeout_ms=3000)
    try:
        return len((await admin.describe_cluster())["brokers"])
    finally:
        await admin.close()


async def list_topics(bootstrap: Kafka) -> set[str]:
    admin = await _admin(bootstrap)
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def ensure_topics(bootstrap: Kafka, specs: Iterable[TopicSpec],
                        replication: Replication = Replication()) -> None:
    """Create the topics that do not exist yet (replicated as ``replication`` says) and wait
    until they have leaders."""
    specs = list(specs)
    admin = await _admin(bootstrap)
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            brokers = len((await admin.describe_cluster())["brokers"])
            factor, min_isr = replication.resolve(brokers)
            try:
                await admin.create_topics([
                    NewTopic(s.name, s.partitions, factor,
                             topic_configs={"min.insync.replicas": str(min_isr), **s.config})
                    for s in missing])
            except TopicAlreadyExistsError:
                pass
            await _wait_for_topics(admin, [s.name for s in missing], present=True)
    finally:
        await admin.close()


async def delete_topics(bootstrap: Kafka, names: Iterable[str]) -> list[str]:
    """Delete the named topics that exist; return those deleted."""
    admin = await _admin(bootstrap)
    try:
        existing = set(await admin.list_topics())
        doomed = [n for n in dict.fromkeys(names) if n in existing]
        if doomed:
            try:
                await admin.delete_topics(doomed)
            except UnknownTopicOrPartitionError:
                pass
            await _wait_for_topics(admin, doomed, present=False)
        return doomed
    finally:
        await admin.close()


async def _wait_for_topics(admin: AIOKafkaAdminClient, names: list[str], present: bool,
                           timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        existing = set(await admin.list_topics())
        if all((n in existing) == present for n in names):
            if not present:
                return
            described = await admin.describe_topics(names)
            if all(t.get("error_code", 0) == 0 and t["partitions"] and
                   all(p["leader"] >= 0 for p in t["partitions"]) for t in described):
                return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"topics {names} did not become {'ready' if present else 'deleted'}")


async def group_members(bootstrap: Kafka, group: str) -> int:
    """Number of live members of a consumer group (0 if the group is empty or unknown)."""
    admin = await _admin(bootstrap)
    try:
        responses = await admin.describe_consumer_groups([group])
        count = 0
        for response in responses:
            for entry in response.groups:
                # (error_code, group_id, state, protocol_type, protocol, members, ...)
                count += len(entry[5])
        return count
    finally:
        await admin.close()


async def group_member_metadata(bootstrap: Kafka, group: str) -> list[bytes]:
    """The member metadata (the assignor's JoinGroup bytes) of each live member of ``group``
    ([] if the group is empty or unknown)."""
    admin = await _admin(bootstrap)
    try:
        responses = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    # members: (member_id, client_id, client_host, member_metadata, member_assignment)
    return [bytes(member[3]) for response in responses for entry in response.groups
            for member in entry[5]]


async def topic_partitions(bootstrap: Kafka, topics: Iterable[str]) -> dict[str, list[int]]:
    """Partition numbers of each existing topic among ``topics`` (missing topics are left out)."""
    admin = await _admin(bootstrap)
    try:
        # Describe only topics that exist: a metadata request for a missing topic makes a
        # broker with auto.create.topics.enable create it with its default partition count.
        existing = set(await admin.list_topics())
        wanted = [t for t in dict.fromkeys(topics) if t in existing]
        described = await admin.describe_topics(wanted) if wanted else []
    finally:
        await admin.close()
    return {t["topic"]: sorted(p["partition"] for p in t["partitions"])
            for t in described if t.get("error_code", 0) == 0 and t["partitions"]}


async def end_offsets(bootstrap: Kafka, topic: str) -> dict[int, int]:
    """Each partition's end offset; {} for a topic that does not exist."""
    parts = (await topic_partitions(bootstrap, [topic])).get(topic, [])
    tps = [TopicPartition(topic, p) for p in parts]
    if not tps:
        # No consumer at all: aiokafka's stop() right after start() raises CancelledError (its
        # offset reset task is cancelled before it ever ran).
        return {}
    consumer = AIOKafkaConsumer(**client_kwargs(bootstrap), enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap: Kafka, group: str, topics: Iterable[str]
                            ) -> dict[tuple[str, int], int]:
    """The group's committed offsets for the topics' partitions (missing: not committed)."""
    admin = await _admin(bootstrap)
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    wanted = set(topics)
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()
            if tp.topic in wanted and meta.offset >= 0}


async def reset_group_to_earliest(bootstrap: Kafka, group: str, topics: Iterable[str]
                                  ) -> dict[tuple[str, int], int]:
    """Commit the earliest available offset of every partition of ``topics`` for ``group``.

    Uses manual assignment, so the consumer never joins the group; the group must be empty.
    """
    parts = await topic_partitions(bootstrap, topics)
    tps = [TopicPartition(t, p) for t, ps in parts.items() for p in ps]
    if not tps:
        return {}
    consumer = AIOKafkaConsumer(**client_kwargs(bootstrap), group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        beginnings = await consumer.beginning_offsets(tps)
        await consumer.commit({tp: off for tp, off in beginnings.items()})
        return {(tp.topic, tp.partition): off for tp, off in beginnings.items()}
    finally:
        await consumer.stop()


def describe(error: Any) -> str:
    return str(error) or type(error).__name__
