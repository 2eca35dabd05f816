"""The definition of DAGs and tasks, as loaded from pipeline files (not their runs)."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

TRIGGER_RULES = (
    "all_success", "all_failed", "all_done", "all_skipped", "one_success", "one_failed",
    "one_done", "none_failed", "none_failed_min_one_success", "none_skipped",
    "all_done_min_one_success", "always",
)
WEIGHT_RULES = ("downstream", "upstream", "absolute")

# Every task key with its default; ``None`` means "not set".
TASK_DEFAULTS: dict[str, Any] = {
    "command": None,
    "shell": "sh",
    "deps": [],
    "trigger_rule": "all_success",
    "retries": 0,
    "retry_delay": 300.0,
    "retry_exponential_backoff": False,
    "max_retry_delay": None,
    "retry_jitter": 0.0,
    "retry_on_exit_codes": None,
    "execution_timeout": None,
    "kill_grace": 10.0,
    "skip_exit_code": 99,
    "pool": "default",
    "pool_slots": 1,
    "queue": "default",
    "priority_weight": 1,
    "weight_rule": "downstream",
    "cwd": None,
    "env": {},
    "window": None,
    "heartbeat_timeout": None,
    "sensor": None,
    "poke_interval": 60.0,
    "timeout": None,
    "soft_fail": False,
    "mode": "poke",
    "outlets": [],
    "inlets": [],
    "description": "",
}
TASK_KEYS = frozenset(TASK_DEFAULTS)
DURATION_KEYS = frozenset(
    {"retry_delay", "max_retry_delay", "execution_timeout", "kill_grace", "heartbeat_timeout",
     "poke_interval", "timeout"}
)

DAG_DEFAULTS: dict[str, Any] = {
    "dag_id": None,
    "description": "",
    "schedule": None,
    "timezone": "UTC",
    "start_date": None,
    "end_date": None,
    "catchup": False,
    "max_active_runs": 1,
    "max_active_tasks": 16,
    "dagrun_timeout": None,
    "paused": False,
    "tags": [],
    "owner": "",
    "params": {},
    "env": {},
    "alerts": [],
    "datasets": {},
    "sla": None,
    "circuit_breaker": None,
    "defaults": {},
    "tasks": {},
}
DAG_KEYS = frozenset(DAG_DEFAULTS)


@dataclass(slots=True)
class TaskSpec:
    task_id: str
    command: str | None = None
    shell: str = "sh"
    deps: list[str] = field(default_factory=list)
    trigger_rule: str = "all_success"
    retries: int = 0
    retry_delay: float = 300.0
    retry_exponential_backoff: bool = False
    max_retry_delay: float | None = None
    retry_jitter: float = 0.0
    retry_on_exit_codes: list[int] | None = None
    execution_timeout: float | None = None
    kill_grace: float = 10.0
    skip_exit_code: int | None = 99
    pool: str = "default"
    pool_slots: int = 1
    queue: str = "default"  # the runners that may run it (SPEC 10: runner --queues)
    priority_weight: int = 1
    weight_rule: str = "downstream"
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    window: str | None = None
    heartbeat_timeout: float | None = None
    sensor: dict[str, Any] | None = None
    poke_interval: float = 60.0
    timeout: float | None = None
    soft_fail: bool = False
    mode: str = "poke"
    outlets: list[str] = field(default_factory=list)
    inlets: list[str] = field(default_factory=list)
    description: str = ""
    # Set by the Python API: the name of the function a ``@task`` runs (its own subprocess
    # imports the file again to call it), and where the task was defined.
    python_callable: str | None = None
    line: int | None = None

    @property
    def max_tries(self) -> int:
        return self.retries + 1


MATCHES = ("same_partition", "any")


@dataclass(frozen=True, slots=True)
class DatasetSchedule:
    """``schedule: {datasets: [...], match: same_partition | any}``, maybe beside a cron."""
    datasets: tuple[str, ...]
    match: str = "same_partition"
    cron: str | None = None

    def describe(self) -> str:
        text = f"datasets: {', '.join(self.datasets)}"
        if self.match != "same_partition":
            text += f" ({self.match})"
        return f"{self.cron} or {text}" if self.cron else text


@dataclass(slots=True)
class DagSpec:
    dag_id: str
    fileloc: str
    tasks: dict[str, TaskSpec]
    description: str = ""
    schedule: str | None = None
    timezone: str = "UTC"
    start_date: float | None = None
    end_date: float | None = None
    catchup: bool = False
    max_active_runs: int = 1
    max_active_tasks: int = 16
    dagrun_timeout: float | None = None
    paused: bool = False
    tags: list[str] = field(default_factory=list)
    owner: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    alerts: list[str] = field(default_factory=list)
    sla: dict[str, Any] | None = None
    circuit_breaker: dict[str, Any] | None = None
    datasets: DatasetSchedule | None = None  # runs made by dataset events (SPEC 9)
    freshness: dict[str, dict[str, Any]] = field(default_factory=dict)  # dataset -> policy
    line: int | None = None
    # Derived at load time: downstream lists and each task's effective priority.
    downstream: dict[str, list[str]] = field(default_factory=dict)
    priority: dict[str, int] = field(default_factory=dict)

    def topological_order(self) -> list[str]:
        """Tasks with every upstream before its downstream, ties in definition order."""
        indegree = {t: len(spec.deps) for t, spec in self.tasks.items()}
        ready = deque(t for t, n in indegree.items() if n == 0)
        order: list[str] = []
        while ready:
            task_id = ready.popleft()
            order.append(task_id)
            for child in self.downstream.get(task_id, ()):
                indegree[child] -= 1
                if indegree[child] == 0:
                    ready.append(child)
        return order

    def layers(self) -> dict[str, int]:
        """Each task's layer: 0 for roots, else one more than its deepest upstream."""
        layer: dict[str, int] = {}
        for task_id in self.topological_order():
            deps = self.tasks[task_id].deps
            layer[task_id] = 1 + max(layer[d] for d in deps) if deps else 0
        return layer

    def leaves(self) -> list[str]:
        return [t for t in self.tasks if not self.downstream.get(t)]
