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
import queue
import selectors
import sys
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flowtui.runner import executor, protocol, sql
from flowtui.runner.endings import EndingMixin
from flowtui.runner.launching import LOG_SCAN_INTERVAL, LaunchMixin, task_base_env
from flowtui.runner.clock import iso
from flowtui.runner.config import Config
from flowtui.runner.model import DagSpec, TaskSpec
from flowtui.runner.trigger_rules import RUN, SKIPPED, UPSTREAM_FAILED, Counts, evaluate, waiting_reason
from flowtui.store import RunState, Store, TaskState, check_transition
from flowtui.store.db import StoreUnavailable, outage
from flowtui.store.models import Run

S = TaskState
Listener = Callable[["LiveRun", "LiveTask | None", str, str], None]
HEARTBEAT_INTERVAL = 5.0
COALESCE_WINDOW = 0.002


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
    pool_override: str | None = None  # a backfill's --pool

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
    log_base: str = ""
    backfill_id: int | None = None
    cancelled: bool = False


class Engine(LaunchMixin, EndingMixin):
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
        self._base_env = task_base_env(config.raw)
        self._next_heartbeat = 0.0
        self._dirs_made: set[str] = set()
        self._dirs_lock = threading.Lock()
        self._dir_queue: queue.SimpleQueue[list[str]] | None = None
        self.on_run_finished: Callable[[LiveRun], None] | None = None
        self.on_task_end: Callable[[LiveTask, TaskState, str | None], None] | None = None
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
        live.base_context = run_context(dag, live)
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

    def adopt_run(self, dag: DagSpec, run: Run, now: float | None = None) -> LiveRun:
        """Take over a run recorded in the store (queued, or left by a runner that died) and
        carry on from where it stands."""
        from flowtui.runner.adoption import adopt_run

        return adopt_run(self, dag, run, self.clock() if now is None else now)

    def flush(self) -> None:
        """Commit what is queued now (``StoreUnavailable`` while the database cannot take it)."""
        self._flush()

    @property
    def stopping(self) -> bool:
        return bool(self._stopping)

    def _make_log_dirs(self, live: LiveRun) -> None:
        """Create the run's log folders in a worker thread, ahead of the tasks that need them.

        Creating a folder costs a few hundred microseconds on some file systems; done there it
        overlaps with tasks running instead of adding to every launch.
        """
        if self._dir_queue is None:
            self._dir_queue = queue.SimpleQueue()
            threading.Thread(target=self._dir_worker, name="flowtui-logdirs",
                             daemon=True).start()
        self._dir_queue.put([os.path.join(live.log_base, t) for t in live.dag.topological_order()])

    def _dir_worker(self) -> None:
        assert self._dir_queue is not None
        while True:
            for path in self._dir_queue.get():
                try:
                    os.makedirs(path, exist_ok=True)
                except OSError:
                    break  # the launch creates it, or reports why it cannot
                with self._dirs_lock:
                    self._dirs_made.add(path)

    def run_until_done(self) -> None:
        """Loop until every run handed in has finished and no killed tree outlives its grace."""
        while self.runs or self._kill_pending():
            self._turn()

    def run_forever(self) -> None:
        """The daemon's loop: until ``request_stop``; running tasks are left to the next runner.

        What is queued is written before it returns; while the database cannot take it, it
        waits (a second stop request gives up and leaves it to the next runner's adoption)."""
        while not self._stopping:
            self._turn()
        told = False
        while self._ops:
            try:
                self._flush()
            except StoreUnavailable as exc:
                if self._stopping > 1:
                    self.store.health.report(f"stopping with {len(self._ops)} changes unwritten "
                                             f"({exc}); the next runner adopts the runs")
                    return
                if not told:
                    told = True
                    self.store.health.report(f"stopping: waiting for the database to take "
                                             f"{len(self._ops)} changes; stop again to leave them")
                delay = max(0.0, self.store.health.retry_at - self.clock())
                for key, _ in self.selector.select(delay):
                    if key.data is None:
                        self._drain_wake(self.clock())

    def call_at(self, at: float, callback: Callable[[float], None]) -> None:
        """Run ``callback(now)`` from the loop at ``at``."""
        self._timer(at, "call", callback)

    def _kill_pending(self) -> bool:
        for _, _, kind, ref in self._timers:
            if kind == "sigkill" and ref[0].pid is not None and ref[0].try_number == ref[1]:
                return True
            if kind == "sigkill_orphans" and executor.survivors(*ref):
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
        health = self.store.health
        if not health.waiting(self.clock()):  # no try is prepared while its row cannot be written
            try:
                self._launch_ready(self.clock())
            except StoreUnavailable:
                # The tries just prepared are queued, not written: their processes start once
                # they are (a process never runs before its try's row is in the database).
                pending = [t for q, p in self._ops if q is sql.SQL_TRY_INSERT
                           for t in [self.runs[p[0]].tasks[p[1]]]
                           if t.try_number == p[2] and t.pid is None]

                def spawn(now: float, pending: list[LiveTask] = pending) -> None:
                    self._flush()  # while it fails, _hook keeps this for after the outage
                    for task in pending:
                        if task.state == S.RUNNING and task.pid is None:
                            self._spawn(task, now)

                self.call_at(health.retry_at, spawn)

        def over() -> bool:
            """run_until_done is over once what the runs recorded, and what hooks an outage
            held back did, is in the database (a daemon waits for what comes next)."""
            if self.daemon or self.runs or self._kill_pending():
                return False
            while self._ops or (self._timers and self._timers[0][0] <= self.clock()):
                try:
                    self._flush()
                except StoreUnavailable:
                    if self._stopping > 1:
                        raise
                    for key, _ in self.selector.select(max(0.0, health.retry_at - self.clock())):
                        if key.data is None:
                            self._drain_wake(self.clock())  # a second Ctrl-C gives up
                    continue
                self._fire_timers(self.clock())  # the hooks redone after an outage
                if self.runs:
                    return False  # a redone hook started more work
            return True

        if over():
            return
        events = None
        if self._ops and self._running:
            # What is left to write here (pids of tasks just started) may wait a moment to ride
            # along with the next commit: short tasks end within it, halving commits a task.
            events = self.selector.select(min(COALESCE_WINDOW, self._timeout()))
        if not events:
            try:
                self._flush()
            except StoreUnavailable:
                pass  # kept queued; tasks are still reaped meanwhile, and it is retried below
            timeout = self._timeout()
            if health.since is not None and self._ops:
                timeout = min(timeout, max(0.0, health.retry_at - self.clock()))
            events = self.selector.select(timeout)
        now = self.clock()
        for key, _ in events:
            if key.data is None:
                self._drain_wake(now)
            else:
                self._reap(key.data, now)
        self._fire_timers(now)
        over()

    def _timeout(self) -> float:
        deadline = self._next_heartbeat
        if self._timers:
            deadline = min(deadline, self._timers[0][0])
        if self._running:
            deadline = min(deadline, self._next_scan)
        if not self.runs and not self.daemon:
            # Only a killed tree's grace is left: look again soon, it usually ends at SIGTERM.
            deadline = min(deadline, self.clock() + 0.05)
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
            self._hook(self.on_wake, now)

    def _stop_everything(self, now: float) -> None:
        force = self._stopping > 1
        for task in list(self._running.values()):
            if force:
                executor.kill_tree(task.pid, task.exit_path, task.kill_members)
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
                    executor.kill_tree(task.pid, task.exit_path, task.kill_members)
            elif kind == "sigkill_orphans":
                pid, mark, members = ref
                executor.kill_tree(pid, mark, members)
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
                self._hook(ref, now)
        if self._running and now >= self._next_scan:
            self._scan_logs(now)
            self._next_scan = now + LOG_SCAN_INTERVAL
        if now >= self._next_heartbeat:
            self._heartbeat(now)
            self._next_heartbeat = now + HEARTBEAT_INTERVAL

    def _heartbeat(self, now: float) -> None:
        self._ops.append(self.store.runner_heartbeat_sql(self.runner_id, now))
        if self._running:
            self._ops.append((sql.SQL_TRY_HEARTBEAT, (now, self.runner_id)))
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
                self._ops.append((sql.SQL_TRY_PID_START, (task.pid_start, task.run.pk,
                                                       task.task_id, task.try_number)))
            if watch.changed:
                watch.changed = False
                self._ops.append((sql.SQL_TRY_PROGRESS, (watch.progress, json.dumps(watch.metadata),
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

    def _slot_block(self, task: LiveTask) -> str | None:
        parallelism = self.config.parallelism
        if self._active >= parallelism:
            return f"parallelism reached ({self._active}/{parallelism} tasks running)"
        size = self.config.pool_size(task.pool)
        if size is None:
            return f"pool {task.pool} is not defined; add it under [pools] in flowtui.toml"
        used = self._pool_used.get(task.pool, 0)
        if used + task.spec.pool_slots > size:
            return f"pool {task.pool} full ({used}/{size} slots)"
        active = self._dag_active.get(task.run.dag.dag_id, 0)
        if active >= task.run.dag.max_active_tasks:
            return f"max_active_tasks reached ({active}/{task.run.dag.max_active_tasks})"
        return None

    # -- bookkeeping -----------------------------------------------------------------------
    def _take_slots(self, task: LiveTask, sign: int) -> None:
        self._active += sign
        pool = task.pool
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
            self._ops.append((sql.SQL_TI_STATE, (new.value, reason, end, task.next_try_at, now,
                                              task.run.pk, task.task_id)))
            self._event(task, old, new, cause, reason, now)
            self._notify(task.run, task, new.value, reason)

    def _set_reason(self, task: LiveTask, reason: str, now: float) -> None:
        if task.reason == reason:
            return
        task.reason = reason
        self._ops.append((sql.SQL_TI_REASON, (reason, now, task.run.pk, task.task_id)))

    def _event(self, task: LiveTask, old: TaskState, new: TaskState, cause: str, detail: str,
               now: float) -> None:
        live = task.run
        self._ops.append((sql.SQL_EVENT, (now, "task", live.dag.dag_id, live.run_id, task.task_id,
                                       task.try_number or None, old.value, new.value, cause,
                                       detail)))

    def _notify(self, live: LiveRun, task: LiveTask | None, what: str, detail: str) -> None:
        if self.listener is not None:
            self.listener(live, task, what, detail)

    def _hook(self, callback: Callable[..., Any], *args: Any) -> None:
        """Call a daemon's hook; a bug or a store error there is logged, and the loop (and every
        task it watches) carries on. In a foreground run a bug surfaces as usual. While the
        database cannot take writes, hooks (which write) wait and run once it can."""
        health = self.store.health
        if health.since is not None:
            if callback is not self.on_wake:  # the wake after the outage covers that one
                health.redo.append(lambda now: callback(*args))
            return
        try:
            callback(*args)
        except Exception as exc:
            message = outage(exc)
            if message is not None:
                line = health.failed(message, self.clock())
                if line:
                    health.report(line)
                if callback is not self.on_wake:
                    health.redo.append(lambda now: callback(*args))
                return
            if not self.daemon:
                raise
            import traceback

            print(f"flowtui runner: error in {getattr(callback, '__name__', callback)}; carrying on",
                  file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()

    def _flush(self) -> None:
        """Commit the queued writes in one transaction. While the database cannot take them
        (another process holds its lock, the disk is full) they stay queued, in order, and
        ``StoreUnavailable`` says so; the next attempt waits a growing backoff."""
        if not self._ops:
            return
        health = self.store.health
        now = self.clock()
        if health.waiting(now):
            raise StoreUnavailable(health.error)
        ops, self._ops = self._ops, []
        try:
            self.store.execute_batch(ops)
        except BaseException as exc:
            self._ops = ops + self._ops  # nothing recorded is dropped: the next flush retries
            message = outage(exc)
            if message is None:
                raise
            line = health.failed(message, now)
            if line:
                health.report(f"{line}; {len(self._ops)} changes kept")
            raise StoreUnavailable(message) from None
        ended = health.succeeded()
        if ended is None:
            return
        error, since = ended
        health.report(f"writing to {self.store.path} again after {now - since:.1f} s")
        self._ops.append(self.store.runner_health_sql(self.runner_id, error, since, now))
        # What failed in the outage is done again now: the owner's own catch-up, the wake
        # pass (operator requests, queued runs), and each hook that failed.
        redo, health.redo = health.redo, []
        if health.on_recovered is not None:
            self.call_at(now, lambda at, hook=health.on_recovered: hook(error, since, at))
        if self.on_wake is not None:
            self.call_at(now, self.on_wake)
        for work in redo:
            self.call_at(now, work)


_TERMINAL = frozenset({S.SUCCESS, S.FAILED, S.UPSTREAM_FAILED, S.SKIPPED})


def run_context(dag: DagSpec, live: Any) -> dict[str, Any]:
    """The template context of a run (a live one, or a stored ``Run``: the same fields)."""
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


