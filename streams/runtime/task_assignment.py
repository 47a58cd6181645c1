"""Which member runs which task, and which members keep standby copies (pure logic, no I/O).

Used by the group leader's assignor (:mod:`streams.runtime.assignor`) when standby replicas are
configured. The idea is Kafka Streams' HighAvailabilityTaskAssignor: every member reports, in
its subscription, how far its local copy of each task's state has read the task's changelogs
(the sum of the changelog positions, "task offset sum"), and which tasks it ran before the
rebalance. Then, task by task:

* the **active** goes to a *caught-up* member: one whose offset sum is within
  ``acceptable_lag`` records of the largest reported for that task. Among those the previous
  owner keeps it (no needless moves), else the least loaded one. A member holds at most
  ``ceil(tasks / members)`` actives, so a newcomer gets its share; when no caught-up member
  has room, the task goes to the least loaded member (it restores there);
* ``standbys`` **standby** copies go to other members, never the one running the active and
  never twice to one member: the ones with the most state for the task first (they are warm
  already), then the least loaded. With fewer members than ``standbys + 1`` the remaining
  standbys are simply not assigned.

Unlike Kafka Streams there are no warm-up replicas and no probing rebalances: balance comes
first, so a task moved to a newcomer for balance restores there from its changelog.

Example::

    >>> members = {"a": MemberTasks({"s_0": 900}, {"s_0"}), "b": MemberTasks({"s_0": 880})}
    >>> plan = assign_tasks(["s_0", "s_1"], {"s_0", "s_1"}, members, standbys=1)
    >>> plan.active, plan.standby
    ({'a': ['s_0'], 'b': ['s_1']}, {'a': ['s_1'], 'b': ['s_0']})
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

# Kafka Streams' acceptable.recovery.lag default: a copy this close to the freshest one counts
# as caught up (its owner restores at most this many records on promotion).
ACCEPTABLE_RECOVERY_LAG = 10_000


@dataclass(frozen=True)
class MemberTasks:
    """What one member reports: ``offsets`` (task id -> sum of the changelog positions its
    local state reflects) and ``previous`` (the tasks it ran as active before)."""

    offsets: Mapping[str, int] = field(default_factory=dict)
    previous: Collection[str] = frozenset()


@dataclass
class TaskPlan:
    """Per member, its active tasks and its standby tasks (task ids, in assignment order)."""

    active: dict[str, list[str]]
    standby: dict[str, list[str]]


def assign_tasks(tasks: list[str], stateful: Collection[str],
                 members: Mapping[str, MemberTasks], standbys: int,
                 acceptable_lag: int = ACCEPTABLE_RECOVERY_LAG) -> TaskPlan:
    """Assign ``tasks`` (``stateful``: those with state, the only ones with standbys) to
    ``members`` (see the module docstring)."""
    names = sorted(members)
    plan = TaskPlan({m: [] for m in names}, {m: [] for m in names})
    if not names:
        return plan
    capacity = -(-len(tasks) // len(names))
    for task in tasks:
        owner = _pick_active(task, names, members, plan, capacity, acceptable_lag)
        plan.active[owner].append(task)
    for task in tasks:
        if task not in stateful:
            continue
        for _ in range(standbys):
            holder = _pick_standby(task, names, members, plan)
            if holder is None:
                break  # fewer members than copies: the rest are not assigned
            plan.standby[holder].append(task)
    return plan


def caught_up(task: str, names: list[str], members: Mapping[str, MemberTasks],
              acceptable_lag: int) -> list[str]:
    """The members whose state of ``task`` is within ``acceptable_lag`` of the freshest."""
    sums = {m: members[m].offsets.get(task) for m in names}
    known = [s for s in sums.values() if s is not None]
    if not known:
        return []
    best = max(known)
    return [m for m, s in sums.items() if s is not None and best - s <= acceptable_lag]


def _pick_active(task: str, names: list[str], members: Mapping[str, MemberTasks],
                 plan: TaskPlan, capacity: int, acceptable_lag: int) -> str:
    room = [m for m in names if len(plan.active[m]) < capacity]
    warm = [m for m in caught_up(task, names, members, acceptable_lag) if m in room]
    previous = [m for m in warm if task in members[m].previous]
    if previous:
        return previous[0]
    candidates = warm or room

    def load(m: str) -> tuple[int, int, str]:
        # least loaded, then the most state for the task, then by name (deterministic)
        return (len(plan.active[m]), -members[m].offsets.get(task, -1), m)

    return min(candidates, key=load)


def _pick_standby(task: str, names: list[str], members: Mapping[str, MemberTasks],
                  plan: TaskPlan) -> str | None:
    free = [m for m in names if task not in plan.active[m] and task not in plan.standby[m]]
    if not free:
        return None

    def rank(m: str) -> tuple[int, int, str]:
        return (-members[m].offsets.get(task, -1), len(plan.standby[m]), m)

    return min(free, key=rank)


__all__ = ["ACCEPTABLE_RECOVERY_LAG", "MemberTasks", "TaskPlan", "assign_tasks", "caught_up"]
