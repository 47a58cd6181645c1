"""What a commit did, and what a failed commit (or task open) means for its task.

Both committers (:mod:`streams.runtime.committer`) report a :class:`CommitResult`; the task
manager reads each failure through :func:`classify` and drops, reopens or stops, the same way
whichever guarantee is in force.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

from aiokafka import errors
from aiokafka.errors import InvalidProducerEpoch, KafkaError, ProducerFenced

from ..state.meta import Offsets, TaskId

FailureKind = Literal["fenced", "retriable", "fatal"]


@dataclass
class CommitResult:
    """The input offsets a commit committed, and the tasks whose part of it failed (nothing of
    theirs was committed; their in-memory changes are still there for the caller to drop)."""

    committed: Offsets = field(default_factory=dict)
    failed: dict[TaskId, BaseException] = field(default_factory=dict)


# Failures that happen again however often the commit is retried: the worker stops.
# Everything else a Kafka client raises (a lost broker, timeouts, a leader not elected yet after
# a restart, aiokafka's "Unexpected error during batch delivery" when its sender gave up, an
# expired batch's sequence gap) ends with the task reopened from its last commit, which is
# safe under both guarantees: at-least-once replays, exactly-once aborted the transaction.
_PERMANENT: tuple[type[BaseException], ...] = (
    errors.TopicAuthorizationFailedError, errors.GroupAuthorizationFailedError,
    errors.ClusterAuthorizationFailedError, errors.TransactionalIdAuthorizationFailed,
    errors.SaslAuthenticationFailed, errors.AuthenticationFailedError,
    errors.MessageSizeTooLargeError, errors.RecordListTooLargeError, errors.RecordTooLargeError,
    errors.InvalidTopicError, errors.InvalidTimestampError, errors.UnsupportedVersionError,
    errors.UnsupportedForMessageFormatError, errors.IncompatibleBrokerVersion,
    errors.InvalidTransactionTimeout, errors.KafkaConfigurationError,
    errors.UnsupportedCodecError, errors.PolicyViolationError, errors.InvalidRequiredAcksError)


def classify(exc: BaseException) -> FailureKind:
    """``fenced``: another owner took the task (drop it until the group assigns it again);
    ``retriable``: every outage symptom, however long the broker is away (reopen the task from
    its last commit); ``fatal``: what a retry cannot fix (authorization, a record the broker
    refuses, an incompatible broker) and errors that are not Kafka's (a bug must not loop)."""
    if isinstance(exc, (ProducerFenced, InvalidProducerEpoch)):
        return "fenced"
    if isinstance(exc, _PERMANENT):
        return "fatal"
    if isinstance(exc, (KafkaError, asyncio.TimeoutError, ConnectionError)):
        return "retriable"
    return "fatal"


__all__ = ["CommitResult", "FailureKind", "classify"]
