"""Task and run states, their groups, and the transitions the store accepts."""
from __future__ import annotations

from enum import Enum


class TaskState(str, Enum):
    NONE = "none"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    UP_FOR_RETRY = "up_for_retry"
    UP_FOR_RESCHEDULE = "up_for_reschedule"
    SUCCESS = "success"
    FAILED = "failed"
    UPSTREAM_FAILED = "upstream_failed"
    SKIPPED = "skipped"

    def __str__(self) -> str:
        return self.value


class RunState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


TERMINAL = frozenset(
    {TaskState.SUCCESS, TaskState.FAILED, TaskState.UPSTREAM_FAILED, TaskState.SKIPPED}
)
ACTIVE = frozenset({TaskState.QUEUED, TaskState.RUNNING})
WAITING = frozenset(
    {TaskState.NONE, TaskState.SCHEDULED, TaskState.UP_FOR_RETRY, TaskState.UP_FOR_RESCHEDULE}
)
RUN_TERMINAL = frozenset({RunState.SUCCESS, RunState.FAILED})

TASK_STATE_NAMES = frozenset(s.value for s in TaskState)

# Which task transitions the engine may make on its own. Operator actions (clear, mark)
# may move any state to any other; they pass ``operator=True``.
_ALLOWED: dict[TaskState, frozenset[TaskState]] = {
    TaskState.NONE: frozenset(
        {TaskState.SCHEDULED, TaskState.QUEUED, TaskState.RUNNING, TaskState.UPSTREAM_FAILED,
         TaskState.SKIPPED, TaskState.FAILED}
    ),
    TaskState.SCHEDULED: frozenset(
        {TaskState.NONE, TaskState.QUEUED, TaskState.RUNNING, TaskState.UPSTREAM_FAILED,
         TaskState.SKIPPED, TaskState.FAILED}
    ),
    TaskState.QUEUED: frozenset({TaskState.RUNNING, TaskState.FAILED, TaskState.SKIPPED,
                                 TaskState.SCHEDULED}),
    # Back to scheduled: a try recorded whose process never started is forgotten (adoption).
    TaskState.RUNNING: frozenset(
        {TaskState.SUCCESS, TaskState.FAILED, TaskState.SKIPPED, TaskState.UP_FOR_RETRY,
         TaskState.UP_FOR_RESCHEDULE, TaskState.SCHEDULED}
    ),
    TaskState.UP_FOR_RETRY: frozenset(
        {TaskState.SCHEDULED, TaskState.QUEUED, TaskState.RUNNING, TaskState.FAILED,
         TaskState.SKIPPED}
    ),
    TaskState.UP_FOR_RESCHEDULE: frozenset(
        {TaskState.SCHEDULED, TaskState.QUEUED, TaskState.RUNNING, TaskState.FAILED,
         TaskState.SKIPPED}
    ),
    TaskState.SUCCESS: frozenset(),
    TaskState.FAILED: frozenset(),
    TaskState.UPSTREAM_FAILED: frozenset(),
    TaskState.SKIPPED: frozenset(),
}


class TransitionError(ValueError):
    """A state change the state machine does not allow."""


def check_transition(old: TaskState, new: TaskState, *, operator: bool = False) -> None:
    if operator or old == new:
        return
    if new not in _ALLOWED[old]:
        raise TransitionError(f"task cannot go from {old.value} to {new.value}")
