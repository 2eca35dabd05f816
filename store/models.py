"""Dataclasses the store's queries return."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from flowtui.store.states import RunState, TaskState


@dataclass(slots=True)
class Run:
    pk: int
    dag_id: str
    run_id: str
    run_type: str
    logical_date: float
    data_interval_start: float
    data_interval_end: float
    conf: dict[str, Any]
    state: RunState
    start_date: float | None
    end_date: float | None
    runner_id: int | None
    updated_at: float
    backfill_id: int | None = None
    partition: str | None = None  # a dataset-triggered run's partition (SPEC 9); else its ds

    @classmethod
    def from_row(cls, row: tuple) -> "Run":
        return cls(row[0], row[1], row[2], row[3], row[4], row[5], row[6], json.loads(row[7]),
                   RunState(row[8]), row[9], row[10], row[11], row[12], row[13], row[14])


RUN_COLUMNS = ("id, dag_id, run_id, run_type, logical_date, data_interval_start, "
               "data_interval_end, conf, state, start_date, end_date, runner_id, updated_at, "
               "backfill_id, partition")


@dataclass(slots=True)
class TaskInstance:
    run_pk: int
    dag_id: str
    run_id: str
    task_id: str
    state: TaskState
    try_number: int
    max_tries: int
    pool: str
    pool_slots: int
    priority: int
    start_date: float | None
    end_date: float | None
    exit_code: int | None
    pid: int | None
    reason: str
    next_try_at: float | None
    updated_at: float
    first_poke_at: float | None = None

    @classmethod
    def from_row(cls, row: tuple) -> "TaskInstance":
        values = list(row)
        values[4] = TaskState(values[4])
        return cls(*values)

    @property
    def duration(self) -> float | None:
        if self.start_date is None or self.end_date is None:
            return None
        return self.end_date - self.start_date


TI_COLUMNS = ("run_pk, dag_id, run_id, task_id, state, try_number, max_tries, pool, pool_slots, "
              "priority, start_date, end_date, exit_code, pid, reason, next_try_at, updated_at, "
              "first_poke_at")


@dataclass(slots=True)
class Try:
    run_pk: int
    task_id: str
    try_number: int
    state: str
    start_date: float
    end_date: float | None
    exit_code: int | None
    reason: str
    log_path: str
    exit_path: str
    pid: int | None
    pid_start: float | None
    heartbeat_at: float | None
    cpu_percent: float | None
    rss_bytes: int | None
    progress: float | None
    metadata: dict[str, Any] = field(default_factory=dict)
    runner_id: int | None = None

    @classmethod
    def from_row(cls, row: tuple) -> "Try":
        values = list(row)
        values[16] = json.loads(values[16])
        return cls(*values)


TRY_COLUMNS = ("run_pk, task_id, try_number, state, start_date, end_date, exit_code, reason, "
               "log_path, exit_path, pid, pid_start, heartbeat_at, cpu_percent, rss_bytes, "
               "progress, metadata, runner_id")


@dataclass(slots=True)
class Event:
    id: int
    at: float
    kind: str
    dag_id: str
    run_id: str
    task_id: str | None
    try_number: int | None
    old_state: str | None
    new_state: str
    cause: str
    detail: str


EVENT_COLUMNS = ("id, at, kind, dag_id, run_id, task_id, try_number, old_state, new_state, "
                 "cause, detail")


@dataclass(slots=True)
class DagRecord:
    dag_id: str
    fileloc: str
    description: str
    schedule: str | None
    timezone: str
    owner: str
    tags: list[str]
    paused: bool
    paused_reason: str | None
    is_active: bool
    task_count: int
    last_parsed_at: float


@dataclass(slots=True)
class ImportError_:
    fileloc: str
    line: int | None
    message: str
    created_at: float
    origin: str = "load"  # "load": the file does not load; "runner": the runner set it aside


@dataclass(slots=True)
class AuditEntry:
    id: int
    at: float
    user: str
    action: str
    dag_id: str | None
    run_id: str | None
    task_id: str | None
    detail: dict[str, Any]


@dataclass(slots=True)
class Backfill:
    id: int
    dag_id: str
    start_date: float
    end_date: float
    parallelism: int
    run_order: str
    reprocess: str
    pool: str | None
    state: str
    skipped: int
    runner_id: int | None
    user: str
    created_at: float
    updated_at: float


BACKFILL_COLUMNS = ("id, dag_id, start_date, end_date, parallelism, run_order, reprocess, pool, "
                    "state, skipped, runner_id, user, created_at, updated_at")


@dataclass(slots=True)
class Request:
    """An operator's action queued for the runner that owns the run."""
    id: int
    user: str
    action: str  # clear | retry | mark | kill | cancel_run
    run_pk: int
    task_ids: list[str]
    options: dict[str, Any]

    @classmethod
    def from_row(cls, row: tuple) -> "Request":
        return cls(row[0], row[1], row[2], row[3], json.loads(row[4]), json.loads(row[5]))


@dataclass(slots=True)
class RunnerRecord:
    id: int
    kind: str  # daemon | run | backfill
    hostname: str
    pid: int
    pid_start: float | None
    started_at: float
    heartbeat_at: float
    stopped_at: float | None
    health: str  # how its writes go: 'ok', or the outage it is in
    last_error: str
    lease: float | None = None  # seconds of silence before it counts as lost (SPEC 10)


RUNNER_COLUMNS = ("id, kind, hostname, pid, pid_start, started_at, heartbeat_at, stopped_at, "
                  "health, last_error, lease")
