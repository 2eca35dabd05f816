"""What the engine holds in memory about the runs it executes: tasks, runs and slots."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowtui.runner import protocol
from flowtui.runner.clock import iso
from flowtui.runner.config import Config
from flowtui.runner.model import DagSpec, TaskSpec
from flowtui.runner.trigger_rules import Counts
from flowtui.store import RunState, TaskState

S = TaskState


@dataclass(slots=True, eq=False)
class LiveTask:
    spec: TaskSpec
    run: "LiveRun"
    order: int
    priority: int
    state: TaskState = S.NONE
    # The state the store holds: a task decided ready and started in the same turn goes from
    # it straight to running (its short stay in scheduled is never written).
    recorded: TaskState = S.NONE
    try_number: int = 0
    max_tries: int = 1
    reason: str = ""
    counts: Counts = field(default_factory=lambda: Counts(0))
    next_try_at: float | None = None
    # The running try:
    pid: int | None = None
    pidfd: int | None = None
    gate: int | None = None  # a launched try's gate, open once its try is committed
    pid_start: float | None = None
    started_at: float | None = None
    log_path: str = ""
    exit_path: str = ""
    watch: protocol.LogWatch | None = None
    kill_reason: str | None = None
    kill_members: set[int] = field(default_factory=set)
    timeout_at: float | None = None
    exit_code: int | None = None
    first_poke_at: float | None = None
    # An operator's clear or mark of a running task: the state it takes once its process ends
    # (state, reason, actor).
    override: tuple[TaskState, str, str] | None = None
    proc: Any = None  # psutil.Process, for CPU and memory samples
    pool_override: str | None = None  # a backfill's --pool
    shipped: int = 0  # bytes of this try's log sent to the database (several hosts)
    ship_seq: int = 0
    # SPEC 10: the runner running this try for this run's runner (None: here, or none), and
    # what it said of the try's progress when it ended.
    remote: int | None = None
    remote_result: tuple[float | None, dict[str, Any]] | None = None

    @property
    def executing(self) -> bool:
        """A process of its current try runs, here or on another runner."""
        return self.pid is not None or self.remote is not None

    @property
    def pool(self) -> str:
        return self.pool_override or self.spec.pool

    @property
    def task_id(self) -> str:
        return self.spec.task_id


@dataclass(slots=True, eq=False)
class LiveRun:
    pk: int
    dag: DagSpec
    run_id: str
    run_type: str
    logical_date: float
    data_interval_start: float
    data_interval_end: float
    conf: dict[str, Any]
    seq: int
    tasks: dict[str, LiveTask] = field(default_factory=dict)
    unfinished: int = 0
    state: RunState = RunState.RUNNING
    started_at: float = 0.0
    timed_out: bool = False
    base_context: dict[str, Any] = field(default_factory=dict)
    params_json: str = "{}"  # $FLOWTUI_PARAMS, the same for every task of the run
    log_base: str = ""
    backfill_id: int | None = None
    cancelled: bool = False
    partition: str | None = None
    superseded: bool = False  # another runner owns it now (SPEC 10): nothing more is done here
    foreign: bool = False  # another runner's run: only tries it offered run here (SPEC 10)


class Slots:
    """Who holds which of the runner's slots: parallelism, pools, each DAG's max_active_tasks."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.active = 0  # tasks holding slots: tries written, process starting or running
        self.pool_used: dict[str, int] = {}
        self.dag_active: dict[str, int] = {}
        # Slots of named pools that runners on other hosts hold (SPEC 10: pools are global).
        self.elsewhere: dict[str, int] = {}

    def full(self) -> bool:
        return self.active >= self.config.parallelism

    def block(self, task: LiveTask) -> str | None:
        """Why the task cannot take its slots now; None when it can."""
        parallelism = self.config.parallelism
        if self.active >= parallelism:
            return f"parallelism reached ({self.active}/{parallelism} tasks running)"
        size = self.config.pool_size(task.pool)
        if size is None:
            return f"pool {task.pool} is not defined; add it under [pools] in flowtui.toml"
        used = self.pool_used.get(task.pool, 0) + self.elsewhere.get(task.pool, 0)
        if used + task.spec.pool_slots > size:
            return f"pool {task.pool} full ({used}/{size} slots)"
        active = self.dag_active.get(task.run.dag.dag_id, 0)
        if active >= task.run.dag.max_active_tasks:
            return f"max_active_tasks reached ({active}/{task.run.dag.max_active_tasks})"
        return None

    def take(self, task: LiveTask, sign: int = 1) -> None:
        self.active += sign
        pool = task.pool
        self.pool_used[pool] = self.pool_used.get(pool, 0) + sign * task.spec.pool_slots
        if not task.run.foreign:  # another runner's run: its owner counts it (take_dag)
            dag_id = task.run.dag.dag_id
            self.dag_active[dag_id] = self.dag_active.get(dag_id, 0) + sign

    def give_back(self, task: LiveTask) -> None:
        self.take(task, -1)

    def block_dag(self, task: LiveTask) -> str | None:
        """Why the task cannot start on any runner now (its DAG's max_active_tasks)."""
        active = self.dag_active.get(task.run.dag.dag_id, 0)
        if active >= task.run.dag.max_active_tasks:
            return f"max_active_tasks reached ({active}/{task.run.dag.max_active_tasks})"
        return None

    def take_dag(self, task: LiveTask, sign: int = 1) -> None:
        """A task offered to, or running on, another runner holds its DAG's slot here."""
        dag_id = task.run.dag.dag_id
        self.dag_active[dag_id] = self.dag_active.get(dag_id, 0) + sign


def run_context(dag: DagSpec, live: Any) -> dict[str, Any]:
    """The template context of a run (a live one, or a stored ``Run``: the same fields)."""
    tz = dag.timezone
    logical = iso(live.logical_date, tz) or ""
    params = dict(dag.params)
    params.update(live.conf or {})
    ds = logical[:10]
    return {
        "ds": ds,
        "partition": getattr(live, "partition", None) or ds,
        "ds_nodash": ds.replace("-", ""),
        "ts": logical,
        "logical_date": logical,
        "data_interval_start": iso(live.data_interval_start, tz) or "",
        "data_interval_end": iso(live.data_interval_end, tz) or "",
        "dag_id": dag.dag_id,
        "run_id": live.run_id,
        "params": params,
    }
