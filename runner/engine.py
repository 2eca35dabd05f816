"""The engine: executes DAG runs as subprocesses, reacting to each exit at once.

One ``selectors`` loop waits on a pidfd per running task, a wake-up pipe (signals, stop
requests) and the nearest timer (retry, timeout, kill grace, heartbeat). Every state change is
queued as SQL and committed in one transaction per loop turn; a try's row is committed before
its process is spawned, so a crash can never leave a process the store does not know about.
"""
from __future__ import annotations

import heapq
import itertools
import json
import os
import random
import shlex
import selectors
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowtui.runner import executor, protocol
from flowtui.runner.clock import iso, local_hms
from flowtui.runner.config import Config
from flowtui.runner.model import DagSpec, TaskSpec
from flowtui.runner.templating import render
from flowtui.runner.trigger_rules import RUN, SKIPPED, UPSTREAM_FAILED, Counts, evaluate, waiting_reason
from flowtui.store import RunState, Store, TaskState, check_transition
from flowtui.store.models import Run

S = TaskState
HEARTBEAT_INTERVAL = 5.0
LOG_SCAN_INTERVAL = 1.0
COALESCE_WINDOW = 0.002
SENSOR_TIMED_OUT = 124  # exit codes of flowtui.runner.sensor
SENSOR_RESCHEDULE = 125
_CAUSES = {"timeout": "timeout", "hung": "hung", "zombie": "zombie", "signal": "signal",
           "dagrun_timeout": "timeout"}
Listener = Callable[["LiveRun", "LiveTask | None", str, str], None]

_SQL_TI_STATE = ("UPDATE task_instances SET state=?, reason=?, end_date=?, next_try_at=?, "
                 "updated_at=? WHERE run_pk=? AND task_id=?")
_SQL_TI_START = ("UPDATE task_instances SET state='running', try_number=?, start_date=?, "
                 "end_date=NULL, exit_code=NULL, pid=NULL, reason='', next_try_at=NULL, "
                 "updated_at=? WHERE run_pk=? AND task_id=?")
_SQL_TI_END = ("UPDATE task_instances SET state=?, end_date=?, exit_code=?, reason=?, "
               "next_try_at=?, updated_at=? WHERE run_pk=? AND task_id=?")
_SQL_TI_REASON = "UPDATE task_instances SET reason=?, updated_at=? WHERE run_pk=? AND task_id=?"
_SQL_TI_PID = "UPDATE task_instances SET pid=? WHERE run_pk=? AND task_id=?"
_SQL_TRY_INSERT = ("INSERT INTO tries (run_pk, task_id, try_number, state, start_date, log_path, "
                   "exit_path, runner_id) VALUES (?, ?, ?, 'running', ?, ?, ?, ?)")
_SQL_TRY_PID = ("UPDATE tries SET pid=?, heartbeat_at=? "
                "WHERE run_pk=? AND task_id=? AND try_number=?")
_SQL_TRY_PID_START = ("UPDATE tries SET pid_start=? "
                      "WHERE run_pk=? AND task_id=? AND try_number=?")
_SQL_TRY_END = ("UPDATE tries SET state=?, end_date=?, exit_code=?, reason=?, progress=?, "
                "metadata=? WHERE run_pk=? AND task_id=? AND try_number=?")
_SQL_TRY_PROGRESS = ("UPDATE tries SET progress=?, metadata=? "
                     "WHERE run_pk=? AND task_id=? AND try_number=?")
_SQL_TRY_HEARTBEAT = "UPDATE tries SET heartbeat_at=? WHERE runner_id=? AND end_date IS NULL"
_SQL_EVENT = ("INSERT INTO events (at, kind, dag_id, run_id, task_id, try_number, old_state, "
              "new_state, cause, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_SQL_RUN_STATE = "UPDATE dag_runs SET state=?, end_date=?, updated_at=? WHERE id=?"


@dataclass(slots=True, eq=False)
class LiveTask:
    spec: TaskSpec
    run: "LiveRun"
    order: int
    priority: int
    state: TaskState = S.NONE
    try_number: int = 0
    max_tries: int = 1
    reason: str = ""
    counts: Counts = field(default_factory=lambda: Counts(0))
    next_try_at: float | None = None
    # The running try:
    pid: int | None = None
    pidfd: int | None = None
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
    # An operator's clear or mark of a running task: the state it takes once its process ends.
    override: tuple[TaskState, str, str] | None = None
    proc: Any = None  # psutil.Process, for CPU and memory samples

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
    log_base: str = ""


class Engine:
    """Executes the runs handed to it with ``add_run`` until they finish."""

    def __init__(self, store: Store, config: Config, runner_id: int, *,
                 listener: Listener | None = None, clock: Callable[[], float] = time.time,
                 daemon: bool = False) -> None:
        self.daemon = daemon
        self.store = store
        self.config = config
        self.runner_id = runner_id
        self.listener = listener
        self.clock = clock
        self.runs: dict[int, LiveRun] = {}
        self.selector = selectors.DefaultSelector()
        self._ops: list[tuple[str, tuple[Any, ...]]] = []
        self._ready: list[tuple[int, int, int, int, LiveTask]] = []
        self._ready_seq = itertools.count()
        self._timers: list[tuple[float, int, str, Any]] = []
        self._timer_seq = itertools.count()
        self._run_seq = itertools.count()
        self._running: dict[int, LiveTask] = {}  # pid -> task
        self._active = 0  # tasks holding slots: tries written, process starting or running
        self._pool_used: dict[str, int] = {}
        self._dag_active: dict[str, int] = {}
        self._stopping = 0
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._base_env = dict(os.environ)
        self._next_heartbeat = 0.0
        self._dirs_made: set[str] = set()
        self.on_run_finished: Callable[[LiveRun], None] | None = None
        self.on_wake: Callable[[float], None] | None = None
        self._next_scan = 0.0

    # -- public ----------------------------------------------------------------------------
    def add_run(self, dag: DagSpec, run: Run) -> LiveRun:
        """Take a freshly created run (all tasks ``none``) and start what is ready."""
        now = self.clock()
        live = LiveRun(pk=run.pk, dag=dag, run_id=run.run_id, run_type=run.run_type,
                       logical_date=run.logical_date, data_interval_start=run.data_interval_start,
                       data_interval_end=run.data_interval_end, conf=run.conf,
                       seq=next(self._run_seq), started_at=run.start_date or now)
        live.base_context = _run_context(dag, live)
        order = {t: i for i, t in enumerate(dag.topological_order())}
        for task_id, spec in dag.tasks.items():
            live.tasks[task_id] = LiveTask(spec=spec, run=live, order=order[task_id],
                                           priority=dag.priority[task_id],
                                           max_tries=spec.max_tries,
                                           counts=Counts(len(spec.deps)))
        live.unfinished = len(live.tasks)
        live.log_base = os.path.join(str(self.config.logs_dir), dag.dag_id, run.run_id)
        self.runs[live.pk] = live
        self._make_log_dirs(live)
        if dag.dagrun_timeout:
            self._timer(live.started_at + dag.dagrun_timeout, "dagrun_timeout", live)
        for task in sorted(live.tasks.values(), key=lambda t: t.order):
            self._evaluate(task, now)
        return live

    def _make_log_dirs(self, live: LiveRun) -> None:
        """Create the run's log folders in a thread, ahead of the tasks that need them.

        Creating a folder costs a few hundred microseconds on some file systems; done here it
        overlaps with tasks running instead of adding to every launch.
        """
        dirs = [os.path.join(live.log_base, t) for t in live.dag.topological_order()]
        made = self._dirs_made

        def work() -> None:
            for path in dirs:
                try:
                    os.makedirs(path, exist_ok=True)
                except OSError:
                    return  # the launch creates it, or reports why it cannot
                made.add(path)

        threading.Thread(target=work, name="flowtui-logdirs", daemon=True).start()

    def run_until_done(self) -> None:
        """Loop until every run handed in has finished and no killed tree outlives its grace."""
        while self.runs or self._kill_pending():
            self._turn()

    def run_forever(self) -> None:
        """The daemon's loop: until ``request_stop``; running tasks are left to the next runner."""
        while not self._stopping:
            self._turn()
        self._flush()

    def call_at(self, at: float, callback: Callable[[float], None]) -> None:
        """Run ``callback(now)`` from the loop at ``at``."""
        self._timer(at, "call", callback)

    def _kill_pending(self) -> bool:
        for _, _, kind, ref in self._timers:
            if kind == "sigkill" and ref[0].pid is not None and ref[0].try_number == ref[1]:
                return True
            if kind == "sigkill_orphans":
                return True
        return False

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def request_stop(self) -> None:
        """First call: kill running tasks and start nothing new. Second: SIGKILL them now."""
        self._stopping += 1
        self.wake()

    def install_signal_handlers(self) -> None:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.request_stop())

    def close(self) -> None:
        self.selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # -- the loop --------------------------------------------------------------------------
    def _turn(self) -> None:
        self._launch_ready(self.clock())
        if not self.daemon and not self.runs and not self._kill_pending():
            self._flush()
            return  # run_until_done is over; a daemon waits for what comes next
        events = None
        if self._ops and self._running:
            # What is left to write here (pids of tasks just started) may wait a moment to ride
            # along with the next commit: short tasks end within it, halving commits a task.
            events = self.selector.select(min(COALESCE_WINDOW, self._timeout()))
        if not events:
            self._flush()
            events = self.selector.select(self._timeout())
        now = self.clock()
        for key, _ in events:
            if key.data is None:
                self._drain_wake(now)
            else:
                self._reap(key.data, now)
        self._fire_timers(now)

    def _timeout(self) -> float:
        deadline = self._next_heartbeat
        if self._timers:
            deadline = min(deadline, self._timers[0][0])
        if self._running:
            deadline = min(deadline, self._next_scan)
        return max(0.0, deadline - self.clock())

    def _drain_wake(self, now: float) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass
        if self._stopping and not self.daemon:
            self._stop_everything(now)
        elif self.on_wake is not None:
            self.on_wake(now)

    def _stop_everything(self, now: float) -> None:
        force = self._stopping > 1
        for task in list(self._running.values()):
            if force:
                executor.kill_tree(task.pid or 0, task.kill_members)  # type: ignore[arg-type]
            elif task.kill_reason is None:
                self._kill(task, "signal", now, grace=task.spec.kill_grace)
        for live in list(self.runs.values()):
            for task in live.tasks.values():
                if task.state in (S.NONE, S.SCHEDULED, S.UP_FOR_RETRY):
                    self._set_reason(task, "run interrupted: the runner was asked to stop", now)
            if not any(t.state == S.RUNNING for t in live.tasks.values()):
                self._finish_run(live, now, interrupted=True)

    # -- timers ----------------------------------------------------------------------------
    def _timer(self, at: float, kind: str, ref: Any) -> None:
        heapq.heappush(self._timers, (at, next(self._timer_seq), kind, ref))

    def _fire_timers(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, kind, ref = heapq.heappop(timers)
            if kind == "retry":
                task, try_number = ref
                if task.state == S.UP_FOR_RETRY and task.try_number == try_number:
                    self._schedule(task, now)
            elif kind == "timeout":
                task, try_number = ref
                if task.state == S.RUNNING and task.try_number == try_number \
                        and task.kill_reason is None:
                    self._kill(task, "timeout", now, grace=task.spec.kill_grace)
            elif kind == "sigkill":
                task, try_number = ref
                if task.pid is not None and task.try_number == try_number:
                    executor.kill_tree(task.pid, task.kill_members)
            elif kind == "sigkill_orphans":
                pid, members = ref
                executor.kill_tree(pid, members)
            elif kind == "dagrun_timeout":
                self._dagrun_timeout(ref, now)
            elif kind == "reschedule":
                task, try_number = ref
                if task.state == S.UP_FOR_RESCHEDULE and task.try_number == try_number:
                    self._schedule(task, now)
            elif kind == "window":
                if ref.state == S.SCHEDULED:
                    self._schedule(ref, now)
            elif kind == "call":
                ref(now)
        if self._running and now >= self._next_scan:
            self._scan_logs(now)
            self._next_scan = now + LOG_SCAN_INTERVAL
        if now >= self._next_heartbeat:
            self._heartbeat(now)
            self._next_heartbeat = now + HEARTBEAT_INTERVAL

    def _heartbeat(self, now: float) -> None:
        self._ops.append(self.store.runner_heartbeat_sql(self.runner_id, now))
        if self._running:
            self._ops.append((_SQL_TRY_HEARTBEAT, (now, self.runner_id)))
            self._sample(now)

    def _sample(self, now: float) -> None:
        """CPU and memory of each running task's process, for the TUI's task detail."""
        import psutil

        for task in self._running.values():
            try:
                if task.proc is None:
                    task.proc = psutil.Process(task.pid)
                    task.proc.cpu_percent(None)  # the first call only sets the baseline
                    continue
                cpu = task.proc.cpu_percent(None)
                rss = task.proc.memory_info().rss
            except (psutil.Error, OSError):
                continue
            self._ops.append(("UPDATE tries SET cpu_percent = ?, rss_bytes = ? WHERE run_pk = ? "
                              "AND task_id = ? AND try_number = ?",
                              (cpu, rss, task.run.pk, task.task_id, task.try_number)))

    def _scan_logs(self, now: float) -> None:
        for task in list(self._running.values()):
            watch = task.watch
            if watch is None:
                continue
            alive = protocol.scan(watch, now)
            limit = task.spec.heartbeat_timeout
            if limit and not alive and task.kill_reason is None \
                    and now - watch.last_activity >= limit:
                self._kill(task, "hung", now, grace=task.spec.kill_grace)
            if task.pid_start is None and task.pid is not None:
                # Read here, not at launch: /proc/PID/stat of a new process is slow to read, and
                # a task that ends within a second never needs adopting by its start time.
                task.pid_start = executor.process_start_time(task.pid)
                self._ops.append((_SQL_TRY_PID_START, (task.pid_start, task.run.pk,
                                                       task.task_id, task.try_number)))
            if watch.changed:
                watch.changed = False
                self._ops.append((_SQL_TRY_PROGRESS, (watch.progress, json.dumps(watch.metadata),
                                                      task.run.pk, task.task_id, task.try_number)))
                self._notify(task.run, task, "progress", "")

    # -- readiness -------------------------------------------------------------------------
    def _evaluate(self, task: LiveTask, now: float) -> None:
        """Decide a ``none`` task: start it, end it without running, or say what it waits for."""
        if task.state != S.NONE:
            return
        live = task.run
        if live.timed_out or self._stopping:
            return
        decision = evaluate(task.spec.trigger_rule, task.counts)
        if decision == RUN:
            self._schedule(task, now)
        elif decision in (UPSTREAM_FAILED, SKIPPED):
            new = S.UPSTREAM_FAILED if decision == UPSTREAM_FAILED else S.SKIPPED
            why = (f"trigger rule {task.spec.trigger_rule} can no longer be met "
                   f"({task.counts.describe()})")
            self._set_state(task, new, "scheduler", why, now, end=now)
            self._task_done(task, now)
        else:
            pending = [d for d in task.spec.deps if live.tasks[d].state not in _TERMINAL]
            self._set_reason(task, waiting_reason(task.spec.trigger_rule, task.counts, pending), now)

    def _schedule(self, task: LiveTask, now: float) -> None:
        """Mark a task ready; it starts in this turn's launch pass if a slot is free."""
        if task.spec.window and self._outside_window(task, now):
            return
        blocked = self._slot_block(task)
        if task.state != S.SCHEDULED:
            self._set_state(task, S.SCHEDULED, "scheduler", blocked or "", now, write=bool(blocked))
        heapq.heappush(self._ready, (-task.priority, task.run.seq, task.order,
                                     next(self._ready_seq), task))

    def _outside_window(self, task: LiveTask, now: float) -> bool:
        """Hold a task outside its daily window: state scheduled, a timer at the opening."""
        opens = window_opens(task.spec.window or "", task.run.dag.timezone, now)
        if opens is None:
            return False
        reason = f"outside its window {task.spec.window} (opens at {local_hms(opens)[:5]})"
        if task.state != S.SCHEDULED:
            self._set_state(task, S.SCHEDULED, "scheduler", reason, now)
        else:
            self._set_reason(task, reason, now)
        self._timer(opens, "window", task)
        return True

    def _slot_block(self, task: LiveTask) -> str | None:
        spec = task.spec
        parallelism = self.config.parallelism
        if self._active >= parallelism:
            return f"parallelism reached ({self._active}/{parallelism} tasks running)"
        size = self.config.pool_size(spec.pool)
        if size is None:
            return f"pool {spec.pool} is not defined; add it under [pools] in flowtui.toml"
        used = self._pool_used.get(spec.pool, 0)
        if used + spec.pool_slots > size:
            return f"pool {spec.pool} full ({used}/{size} slots)"
        active = self._dag_active.get(task.run.dag.dag_id, 0)
        if active >= task.run.dag.max_active_tasks:
            return f"max_active_tasks reached ({active}/{task.run.dag.max_active_tasks})"
        return None

    def _launch_ready(self, now: float) -> None:
        ready = self._ready
        if not ready or self._stopping:
            return
        blocked: list[tuple[int, int, int, int, LiveTask]] = []
        launching: list[LiveTask] = []
        while ready:
            entry = heapq.heappop(ready)
            task = entry[4]
            if task.state != S.SCHEDULED or task.run.timed_out:
                continue
            if task.spec.window and self._outside_window(task, now):
                continue
            reason = self._slot_block(task)
            if reason is not None:
                if task.reason != reason:
                    self._set_reason(task, reason, now)
                blocked.append(entry)
                if self._active >= self.config.parallelism:
                    break
                continue
            self._prepare_try(task, now)
            launching.append(task)
        for entry in blocked:
            heapq.heappush(ready, entry)
        if not launching:
            return
        self._flush()  # the tries are on disk before any process exists
        for task in launching:
            self._spawn(task, now)

    # -- launching -------------------------------------------------------------------------
    def _prepare_try(self, task: LiveTask, now: float) -> None:
        live = task.run
        task.try_number += 1
        log_dir = os.path.join(live.log_base, task.task_id)
        task.log_path = f"{log_dir}/{task.try_number}.log"
        task.exit_path = f"{log_dir}/{task.try_number}.exit"
        task.kill_reason = None
        task.kill_members = set()
        task.exit_code = None
        task.started_at = now
        if task.spec.sensor is not None and task.first_poke_at is None:
            task.first_poke_at = now  # a sensor's timeout counts from its first poke
            self._ops.append(("UPDATE task_instances SET first_poke_at = ? WHERE run_pk = ? "
                              "AND task_id = ?", (now, live.pk, task.task_id)))
        self._take_slots(task, +1)
        check_transition(task.state, S.RUNNING)
        old = task.state
        task.state = S.RUNNING
        task.reason = ""
        self._ops.append((_SQL_TI_START, (task.try_number, now, now, live.pk, task.task_id)))
        self._ops.append((_SQL_TRY_INSERT, (live.pk, task.task_id, task.try_number, now,
                                            task.log_path, task.exit_path, self.runner_id)))
        self._event(task, old, S.RUNNING, "scheduler", "", now)

    def _spawn(self, task: LiveTask, now: float) -> None:
        live = task.run
        log_dir = os.path.dirname(task.log_path)
        if log_dir not in self._dirs_made:
            os.makedirs(log_dir, exist_ok=True)
            self._dirs_made.add(log_dir)
        try:
            env = self._task_env(task)
            script = self._script(task, env)
            launched = executor.launch(script, shell=task.spec.shell, log_path=task.log_path,
                                       env=env)
        except Exception as exc:  # cannot start (bad cwd template, no shell, ...): a failed try
            message = f"could not start the task: {exc}"
            with open(task.log_path, "a", encoding="utf-8") as fh:
                fh.write(message + "\n")
            self._take_slots(task, -1)
            self._end_try(task, 127, message, self.clock())
            return
        task.pid = launched.pid
        task.pidfd = launched.pidfd
        task.pid_start = None
        task.watch = protocol.LogWatch(task.log_path, last_activity=now)
        self._running[launched.pid] = task
        self.selector.register(launched.pidfd, selectors.EVENT_READ, task)
        self._ops.append((_SQL_TRY_PID, (launched.pid, now, live.pk, task.task_id,
                                         task.try_number)))
        self._ops.append((_SQL_TI_PID, (launched.pid, live.pk, task.task_id)))
        if task.spec.execution_timeout:
            task.timeout_at = now + task.spec.execution_timeout
            self._timer(task.timeout_at, "timeout", (task, task.try_number))
        if self._next_scan <= now:
            self._next_scan = now + LOG_SCAN_INTERVAL
        self._notify(live, task, "running", "")

    def _template_context(self, task: LiveTask) -> dict[str, Any]:
        context = dict(task.run.base_context)
        context["task_id"] = task.task_id
        context["try_number"] = str(task.try_number)
        return context

    def _task_env(self, task: LiveTask) -> dict[str, str]:
        live = task.run
        context = self._template_context(task)
        env = dict(self._base_env)
        for key, value in live.dag.env.items():
            env[key] = render(value, context)
        for key, value in task.spec.env.items():
            env[key] = render(value, context)
        env.update({
            "FLOWTUI_DAG_ID": live.dag.dag_id,
            "FLOWTUI_RUN_ID": live.run_id,
            "FLOWTUI_TASK_ID": task.task_id,
            "FLOWTUI_TRY_NUMBER": str(task.try_number),
            "FLOWTUI_DS": context["ds"],
            "FLOWTUI_LOGICAL_DATE": context["logical_date"],
            "FLOWTUI_DATA_INTERVAL_START": context["data_interval_start"],
            "FLOWTUI_DATA_INTERVAL_END": context["data_interval_end"],
            "FLOWTUI_PARAMS": json.dumps(context["params"]),
            "FLOWTUI_DAG_FILE": live.dag.fileloc,
            "FLOWTUI_SKIP_EXIT_CODE": str(task.spec.skip_exit_code or 99),
        })
        return env

    def _script(self, task: LiveTask, env: dict[str, str]) -> str:
        spec = task.spec
        context = self._template_context(task)
        cwd = render(spec.cwd, context) if spec.cwd else None
        if spec.sensor is not None:
            kind, arg = next(iter(spec.sensor.items()))
            arg = render(arg, context, shell=kind == "command")
            env["FLOWTUI_SENSOR"] = json.dumps({kind: arg})
            env["FLOWTUI_POKE_INTERVAL"] = repr(spec.poke_interval)
            env["FLOWTUI_SENSOR_TIMEOUT"] = repr(spec.timeout) if spec.timeout else ""
            env["FLOWTUI_SENSOR_MODE"] = spec.mode
            env["FLOWTUI_FIRST_POKE_AT"] = repr(task.first_poke_at or self.clock())
            env["FLOWTUI_HOME"] = str(self.config.home)
            env["FLOWTUI_LOGICAL_TS"] = repr(task.run.logical_date)
            command = f"{shlex.quote(sys.executable)} -P -m flowtui.runner.sensor"
        elif spec.python_callable is not None:
            # -P: the task's working folder must not shadow the installed flowtui package.
            command = f"{shlex.quote(sys.executable)} -P -m flowtui.runner.pytask"
        else:
            command = render(spec.command or "", context, shell=True)
        return executor.build_script(command, task.exit_path, cwd)

    # -- endings ---------------------------------------------------------------------------
    def _reap(self, task: LiveTask, now: float) -> None:
        pid = task.pid
        if pid is None:
            return
        try:
            reaped, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            reaped, status = pid, None
        if reaped == 0:
            return  # not ended yet
        if task.pidfd is not None:
            self.selector.unregister(task.pidfd)
            os.close(task.pidfd)
            task.pidfd = None
        self._running.pop(pid, None)
        self._take_slots(task, -1)
        code = os.waitstatus_to_exitcode(status) if status is not None else None
        kill_reason = task.kill_reason
        if code is None:  # not our child (adopted): its shell wrote the status, or nothing did
            code = _read_exit_file(task.exit_path)
            if code is None and kill_reason is None:
                kill_reason = "zombie"
        task.pid = None
        if task.kill_reason:  # whatever is left of the tree gets SIGKILL after the grace
            survivors = executor.survivors(pid, task.kill_members)
            if survivors:
                self._timer(now + task.spec.kill_grace, "sigkill_orphans", (pid, survivors))
        self._end_try(task, code, kill_reason, now)

    def _end_try(self, task: LiveTask, code: int | None, kill_reason: str | None,
                 now: float) -> None:
        live = task.run
        spec = task.spec
        watch = task.watch
        if watch is not None:
            protocol.finish(watch, now)
        task.exit_code = code
        task.proc = None
        new, reason, retry_allowed = self._outcome(task, code, kill_reason)
        cause = _CAUSES.get(kill_reason or "", "operator" if kill_reason else "scheduler")
        if task.override is not None:
            new, reason, cause = task.override
            task.override = None
            retry_allowed = False
        elif new == S.FAILED:
            if retry_allowed and task.try_number < task.max_tries and not self._stopping \
                    and not live.timed_out:
                new = S.UP_FOR_RETRY
        metadata = json.dumps(watch.metadata) if watch else "{}"
        progress = watch.progress if watch else None
        try_state = {S.SUCCESS: "success", S.SKIPPED: "skipped",
                     S.UP_FOR_RESCHEDULE: "rescheduled"}.get(new, "failed")
        self._ops.append((_SQL_TRY_END, (try_state, now, code, reason, progress, metadata,
                                         live.pk, task.task_id, task.try_number)))
        next_try_at = None
        ti_reason = reason
        if new == S.UP_FOR_RETRY:
            next_try_at = now + self._retry_delay(spec, task.try_number)
            ti_reason = (f"{reason}; retry at {local_hms(next_try_at)} "
                         f"(try {task.try_number + 1} of {task.max_tries})")
        elif new == S.UP_FOR_RESCHEDULE:
            next_try_at = now + spec.poke_interval
            task.max_tries += 1  # a reschedule is not a failure: it uses up no retry
            ti_reason = f"condition not met yet; next poke at {local_hms(next_try_at)}"
            self._ops.append(("UPDATE task_instances SET max_tries = ? WHERE run_pk = ? "
                              "AND task_id = ?", (task.max_tries, live.pk, task.task_id)))
        check_transition(task.state, new, operator=cause.startswith("operator"))
        old = task.state
        task.state = new
        task.reason = ti_reason
        task.next_try_at = next_try_at
        self._ops.append((_SQL_TI_END, (new.value, now, code, ti_reason, next_try_at, now,
                                        live.pk, task.task_id)))
        self._event(task, old, new, cause, reason, now)
        task.watch = None
        self._notify(live, task, new.value, ti_reason)
        if new == S.UP_FOR_RETRY:
            self._timer(next_try_at, "retry", (task, task.try_number))  # type: ignore[arg-type]
        elif new == S.UP_FOR_RESCHEDULE:
            self._timer(next_try_at, "reschedule", (task, task.try_number))  # type: ignore[arg-type]
        elif new == S.NONE:
            self._evaluate(task, now)  # cleared while it ran: decided again like a new task
        else:
            self._task_done(task, now)
        if self._stopping and not self.daemon and live.state == RunState.RUNNING and not any(
                t.state == S.RUNNING for t in live.tasks.values()):
            self._finish_run(live, now, interrupted=True)

    def _outcome(self, task: LiveTask, code: int | None,
                 kill_reason: str | None) -> tuple[TaskState, str, bool]:
        """The state a try's end leads to (before retries), its reason, and if it may retry."""
        spec = task.spec
        if kill_reason == "timeout":
            return S.FAILED, f"execution_timeout of {spec.execution_timeout:g}s exceeded", True
        if kill_reason == "hung":
            return (S.FAILED, f"hung: no output and no heartbeat for "
                              f"{spec.heartbeat_timeout:g}s", True)
        if kill_reason == "zombie":
            return (S.FAILED, "zombie: the process ended while no runner watched it and left "
                              "no exit status", True)
        if kill_reason == "dagrun_timeout":
            return S.FAILED, "dagrun_timeout exceeded", False
        if kill_reason == "signal":
            return S.FAILED, "killed: the runner was asked to stop", False
        if kill_reason:
            return S.FAILED, kill_reason, True
        if spec.sensor is not None and code is not None:
            if code == SENSOR_RESCHEDULE:
                return S.UP_FOR_RESCHEDULE, "", False
            if code == SENSOR_TIMED_OUT:
                timeout = f"{spec.timeout:g}s" if spec.timeout else "its timeout"
                if spec.soft_fail:
                    return S.SKIPPED, f"sensor timed out after {timeout} (soft_fail)", False
                return S.FAILED, f"sensor timed out after {timeout}", False
        if code is None:
            return S.FAILED, "exit code unknown", True
        if code < 0:
            return S.FAILED, f"killed by signal {_signal_name(-code)}", \
                spec.retry_on_exit_codes is None
        if code == 0:
            return S.SUCCESS, "", False
        if spec.skip_exit_code is not None and code == spec.skip_exit_code:
            return S.SKIPPED, f"exited {code} (skip_exit_code)", False
        codes = spec.retry_on_exit_codes
        return S.FAILED, f"exited {code}", codes is None or code in codes

    @staticmethod
    def _retry_delay(spec: TaskSpec, try_number: int) -> float:
        delay = spec.retry_delay
        if spec.retry_exponential_backoff:
            delay = delay * (2 ** (try_number - 1))
        if spec.max_retry_delay is not None:
            delay = min(delay, spec.max_retry_delay)
        if spec.retry_jitter:
            delay *= 1 + random.uniform(-spec.retry_jitter, spec.retry_jitter)
        return max(0.0, delay)

    def _task_done(self, task: LiveTask, now: float) -> None:
        """A task reached a terminal state: update its downstream, maybe finish the run."""
        live = task.run
        live.unfinished -= 1
        state = task.state
        for child_id in live.dag.downstream[task.task_id]:
            child = live.tasks[child_id]
            counts = child.counts
            if state == S.SUCCESS:
                counts.success += 1
            elif state == S.FAILED:
                counts.failed += 1
            elif state == S.SKIPPED:
                counts.skipped += 1
            else:
                counts.upstream_failed += 1
            self._evaluate(child, now)
        if live.unfinished == 0 and live.state == RunState.RUNNING:
            self._finish_run(live, now)

    def _finish_run(self, live: LiveRun, now: float, interrupted: bool = False) -> None:
        if live.state != RunState.RUNNING:
            return
        leaves = [live.tasks[t] for t in live.dag.leaves()]
        failed = interrupted or live.timed_out or any(
            t.state in (S.FAILED, S.UPSTREAM_FAILED) for t in leaves)
        if not failed and any(t.state not in (S.SUCCESS, S.SKIPPED) for t in leaves):
            failed = True
        new = RunState.FAILED if failed else RunState.SUCCESS
        live.state = new
        cause = "signal" if interrupted else "dagrun_timeout" if live.timed_out else "scheduler"
        self._ops.append((_SQL_RUN_STATE, (new.value, now, now, live.pk)))
        self._ops.append((_SQL_EVENT, (now, "run", live.dag.dag_id, live.run_id, None, None,
                                       "running", new.value, cause, "")))
        self.runs.pop(live.pk, None)
        self._notify(live, None, new.value, cause)
        if self.on_run_finished is not None:
            self.on_run_finished(live)

    def _dagrun_timeout(self, live: LiveRun, now: float) -> None:
        if live.state != RunState.RUNNING or live.pk not in self.runs:
            return
        live.timed_out = True
        for task in live.tasks.values():
            if task.state == S.RUNNING:
                self._kill(task, "dagrun_timeout", now, grace=task.spec.kill_grace)
            elif task.state not in _TERMINAL:
                self._set_state(task, S.SKIPPED, "dagrun_timeout",
                                "dagrun_timeout exceeded before the task started", now, end=now)
                live.unfinished -= 1
        if live.unfinished == 0:
            self._finish_run(live, now)

    def _kill(self, task: LiveTask, reason: str, now: float, grace: float) -> None:
        if task.pid is None:
            return
        task.kill_reason = reason
        task.kill_members = executor.terminate_tree(task.pid)
        self._timer(now + grace, "sigkill", (task, task.try_number))

    # -- bookkeeping -----------------------------------------------------------------------
    def _take_slots(self, task: LiveTask, sign: int) -> None:
        self._active += sign
        pool = task.spec.pool
        self._pool_used[pool] = self._pool_used.get(pool, 0) + sign * task.spec.pool_slots
        dag_id = task.run.dag.dag_id
        self._dag_active[dag_id] = self._dag_active.get(dag_id, 0) + sign

    def _set_state(self, task: LiveTask, new: TaskState, cause: str, reason: str, now: float,
                   *, end: float | None = None, write: bool = True,
                   operator: bool = False) -> None:
        check_transition(task.state, new, operator=operator)
        old = task.state
        task.state = new
        task.reason = reason
        if write:
            self._ops.append((_SQL_TI_STATE, (new.value, reason, end, task.next_try_at, now,
                                              task.run.pk, task.task_id)))
            self._event(task, old, new, cause, reason, now)
            self._notify(task.run, task, new.value, reason)

    def _set_reason(self, task: LiveTask, reason: str, now: float) -> None:
        if task.reason == reason:
            return
        task.reason = reason
        self._ops.append((_SQL_TI_REASON, (reason, now, task.run.pk, task.task_id)))

    def _event(self, task: LiveTask, old: TaskState, new: TaskState, cause: str, detail: str,
               now: float) -> None:
        live = task.run
        self._ops.append((_SQL_EVENT, (now, "task", live.dag.dag_id, live.run_id, task.task_id,
                                       task.try_number or None, old.value, new.value, cause,
                                       detail)))

    def _notify(self, live: LiveRun, task: LiveTask | None, what: str, detail: str) -> None:
        if self.listener is not None:
            self.listener(live, task, what, detail)

    def _flush(self) -> None:
        if self._ops:
            ops, self._ops = self._ops, []
            self.store.execute_batch(ops)


_TERMINAL = frozenset({S.SUCCESS, S.FAILED, S.UPSTREAM_FAILED, S.SKIPPED})


def _run_context(dag: DagSpec, live: LiveRun) -> dict[str, Any]:
    tz = dag.timezone
    logical = iso(live.logical_date, tz) or ""
    params = dict(dag.params)
    params.update(live.conf or {})
    ds = logical[:10]
    return {
        "ds": ds,
        "ds_nodash": ds.replace("-", ""),
        "ts": logical,
        "logical_date": logical,
        "data_interval_start": iso(live.data_interval_start, tz) or "",
        "data_interval_end": iso(live.data_interval_end, tz) or "",
        "dag_id": dag.dag_id,
        "run_id": live.run_id,
        "params": params,
    }


def window_opens(window: str, timezone: str, now: float) -> float | None:
    """None when ``now`` is inside the daily window "HH:MM-HH:MM", else when it next opens."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(timezone)
    start_text, end_text = (p.strip() for p in window.split("-"))
    start_min = int(start_text[:-3]) * 60 + int(start_text[-2:])
    end_min = int(end_text[:-3]) * 60 + int(end_text[-2:])
    local = dt.datetime.fromtimestamp(now, tz)
    minute = local.hour * 60 + local.minute + local.second / 60
    inside = (start_min <= minute < end_min) if start_min <= end_min else (
        minute >= start_min or minute < end_min)
    if inside:
        return None
    day = local.date() if minute < start_min else local.date() + dt.timedelta(days=1)
    opening = dt.datetime(day.year, day.month, day.day, start_min // 60, start_min % 60,
                          tzinfo=tz)
    return opening.timestamp()


def _read_exit_file(path: str) -> int | None:
    try:
        with open(path, "rb") as fh:
            return int(fh.read().strip() or b"-1")
    except (OSError, ValueError):
        return None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
