"""``flowtui runner``: the scheduler daemon of one home.

It creates scheduled runs on time, starts queued ones within ``max_active_runs``, adopts the
runs of dead runners, applies operator requests, watches the pipelines folder, and leaves
running tasks alone when it stops (the next runner adopts them).
"""
from __future__ import annotations

import fcntl
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from flowtui.runner.actions import claim, live_owner
from flowtui.runner.alerting import Alerts, dag_policy_errors, parse_alerting
from flowtui.runner.backfill import finish_if_done, start_backfill_runs
from flowtui.runner.clock import SYSTEM, Clock, iso
from flowtui.runner.config import Config
from flowtui.runner.engine import Engine, LiveRun
from flowtui.runner.executor import process_start_time, same_process
from flowtui.runner.loader import LoadError, load_folder, pipeline_files, record_load
from flowtui.runner.model import DagSpec
from flowtui.runner.freshness import FreshnessWatch
from flowtui.runner.freshness import policies as freshness_policies
from flowtui.runner.folderwatch import FolderWatch
from flowtui.runner.retention import DailyRetention
from flowtui.runner.runs import consumer_run_id, partition_day
from flowtui.runner.sla import SlaWatch
from flowtui.runner.schedule import intervals_between, latest_interval, next_interval_end
from flowtui.store import TERMINAL, RunState, Store, StoreError, TaskState, host_name
from flowtui.store.health import outage
from flowtui.store.models import ImportError_

if TYPE_CHECKING:
    from flowtui.runner.notify import Sender

SCAN_INTERVAL = 2.0
LOCK_GRACE = 2.0  # seconds a dead runner's lock is waited for before the home counts as taken
FULL_SCAN = 30.0  # seconds between looks at every pipeline file while the folder is watched
TURN_WAIT = 1.0  # seconds a queued run waits for the least busy runner before anyone takes it
# A write waits this long for another process's lock before the loop backs off and retries
# (tasks are reaped meanwhile); the CLI's writers wait longer, they have nothing else to do.
BUSY_TIMEOUT = 5.0
BACKOFF = 0.5
# An outage of the database longer than this raises an alert once it is over.
ALERT_AFTER = 60.0
OUTAGE_ALERT = "runner_degraded"


class RunnerError(Exception):
    """The daemon cannot start; the message says why."""


def acquire_lock(home: Path) -> IO[str]:
    """One daemon per home: an exclusive lock the kernel drops when the process dies.

    The lock is only good while the file is the one at the path: one deleted or replaced
    between our open and our lock is opened again. (A file deleted later is caught by the
    runners table: see ``refuse_second_daemon``.)"""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "runner.lock"
    deadline = time.monotonic() + LOCK_GRACE
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            if not _alive(holder) and time.monotonic() < deadline:
                # Its runner is gone (kill -9): the kernel lets go of a dead process's lock a
                # moment after it is reaped (20 ms seen here), not always before.
                time.sleep(0.01)
                continue
            raise RunnerError(f"a runner is already alive for {home} (pid {holder}); "
                              "stop it first or use another --home") from None
        try:
            same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _alive(pid: str) -> bool:
    """Whether the process the lock file names is alive (a zombie is not)."""
    if not pid.isdigit():
        return True  # nobody named: someone holds it
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def refuse_second_daemon(home: Path, store: Store) -> Callable[[sqlite3.Connection], None]:
    """A check run in the transaction that registers a daemon: refuse while the runners table
    shows a live daemon on this host (same pid and start time), even when runner.lock was
    deleted under it."""
    def refuse(conn: sqlite3.Connection) -> None:
        for daemon in store.newest_daemon(host_name()):
            if daemon.pid != os.getpid() and daemon.pid_start is not None \
                    and same_process(daemon.pid, daemon.pid_start):
                raise RunnerError(f"a runner is already alive for {home} (pid {daemon.pid}); "
                                  "stop it first or use another --home")
    return refuse


class Daemon:
    def __init__(self, config: Config, *, scan_interval: float = SCAN_INTERVAL,
                 busy_timeout: float = BUSY_TIMEOUT, backoff: float = BACKOFF,
                 alert_after: float = ALERT_AFTER, clock: Clock = SYSTEM,
                 queues: frozenset[str] | None = None) -> None:
        self.config = config
        self.queues = queues  # None: every queue (SPEC 10, runner --queues)
        self.clock = clock
        self.scan_interval = scan_interval
        self.alert_after = alert_after
        self.lock = acquire_lock(config.home)
        self.store = Store.open(config.database, busy_timeout=busy_timeout, now=clock.now)
        self.store.health.backoff = backoff
        self.store.health.on_recovered = self._store_recovered
        self.alert_config = parse_alerting(config.raw, str(config.home / "flowtui.toml"))
        self.runner_id = self.store.register_runner(
            "daemon", process_start_time(os.getpid()),
            lease=config.host_lease if self.store.kind == "postgresql" else None,  # one host: none
            refuse=refuse_second_daemon(config.home, self.store), queues=queues,
            channels=self.alert_config.channels)
        self.engine = Engine(self.store, config, self.runner_id, clock=clock)
        self.engine.queues = queues
        if self.store.kind == "postgresql":  # SPEC 10: tasks offered to and claimed from all
            self.engine.remote.enable(lambda dag_id: self.dags.get(dag_id),
                                      lambda: list(self.dags))
            self.engine.remote.on_host_lost = self._executor_lost
        self.engine.on_wake = self._on_wake
        self.engine.on_run_finished = self._on_run_finished
        self.dags: dict[str, DagSpec] = {}
        self._snapshot: dict[str, tuple[int, int]] = {}
        self._fire_at: dict[str, float] = {}
        self.sender: Sender | None = None  # started when there is something to deliver
        self.alerts = Alerts(self.store, self.alert_config, self.dags, self._wake_sender,
                             arm=self._arm)
        self.engine.on_task_end = self._on_task_end
        self.slas = SlaWatch(self.alerts)
        self.freshness = FreshnessWatch(self.store, self.alerts, clock.now())
        self._watched: dict[str, Any] = {}  # dataset -> freshness policy (SPEC 9)
        # DAGs whose scheduling raised: dag_id -> (file, its (mtime, size) then, the error).
        self._aside: dict[str, tuple[str, tuple[int, int] | None, str]] = {}
        self._rescan_at = 0.0
        self.watch: FolderWatch | None = None  # the kernel's word on the pipelines folder
        self._full_scan_at = 0.0
        self._armed: set[float] = set()  # times a tick timer is set for
        self.retention: DailyRetention | None = None
        self.listener: Any = None
        if config.retention is not None:
            self.retention = DailyRetention(self.engine, self.store, config.logs_dir,
                                            config.retention)

    # -- lifecycle -------------------------------------------------------------------------
    def serve(self) -> None:
        """``flowtui runner``: start, then loop until SIGTERM/SIGINT, then close."""
        self.engine.install_signal_handlers()
        self.start()
        try:
            self.engine.run_forever()
        finally:
            self.close()

    def start(self) -> None:
        """Begin at the clock's now: load the pipelines, adopt what dead runners left, apply
        pending requests, create and start what is due, and arm the next tick."""
        for error in self.alert_config.errors:
            print(f"flowtui runner: {error}", file=sys.stderr, flush=True)
        if self.alert_config.channels or self.store.alerts.next_attempt_at() is not None:
            # Deliveries need a sender: to a channel configured, or left pending for one no
            # longer configured (it marks those failed). Without either nothing is ever due,
            # and the runner spares the thread and its HTTP client.
            self._start_sender()
        self.listener = self.store.listen(self.engine.heard)  # PostgreSQL: other hosts' calls
        if self.listener is not None:
            self.listener.start()
        self.watch = FolderWatch.open(self.config.pipelines)
        if self.watch is not None:
            self.engine.watch_fd(self.watch.fileno(), self._files_changed)
        self.engine.hook(self._start, self.clock.now())

    def run_until_idle(self) -> None:
        """Loop until no run is left in flight and nothing is due now (a burst: tests drive
        ``tick`` between them; a clock that skips idle time moves only while runs wait)."""
        engine = self.engine
        while True:
            while engine.runs or engine.kills_pending():
                engine.turn()
            engine.flush()
            if not engine.fire_due():
                break

    def _start_sender(self) -> None:
        from flowtui.runner.notify import Sender

        self.sender = Sender(self.config.database, self.alert_config, clock=self.clock)
        self.sender.start()

    def _wake_sender(self) -> None:
        if self.sender is not None:
            self.sender.wake()

    def close(self) -> None:
        """Stop: running tasks are left to the next runner; the stop is recorded."""
        if self.sender is not None:
            self.sender.stop()
        if self.listener is not None:
            self.listener.stop()
            self.listener.join(5)  # before the loop's wake pipe it writes to is closed
        if self.watch is not None:
            self.engine.unwatch_fd(self.watch.fileno())
            self.watch.close()
            self.watch = None
        self.engine.close()
        try:
            self.store.stop_runner(self.runner_id)  # and folds the log into flowtui.db
        except sqlite3.OperationalError as exc:
            self.store.health.report(f"could not record the stop: {outage(exc) or exc}")
        self.lock.close()

    def _start(self, now: float) -> None:
        self._record_aside(now)  # a new runner tries every DAG again: stale ones go
        self._reload(now, force=True)
        self._rescan_at = now + self.scan_interval
        self._full_scan_at = now + FULL_SCAN
        self.engine.remote.sweep(now)  # what earlier runners here claimed (SPEC 10)
        self._adopt_orphans(now)
        self._on_wake(now)
        self._arm(self.tick(now))
        if self.retention is not None and not self.retention.started:
            self.retention.start(now)

    # -- time ------------------------------------------------------------------------------
    def tick(self, now: float) -> float:
        """Everything the daemon does on time, as of ``now``: a changed pipelines folder is
        reloaded and dead runners' runs adopted (every ``scan_interval``), runs whose interval
        ended are created and started, alert steps that came due fire, SLAs are checked.
        Returns when it next has timed work (``serve`` arms a timer for then; a test calls it
        again with a later ``now``)."""
        if now >= self._rescan_at - 1e-3:
            self._rescan_at = now + self.scan_interval
            self._rescan_files(now)
            self._adopt_orphans(now)
            self._explain_unserved(now)
            if self.store.kind == "postgresql":  # queued by a runner on another host
                self._hosts_back(now)
                for dag_id in sorted(self.store.queued_dag_ids()):
                    self._per_dag(dag_id, "starting queued runs", self._start_queued, dag_id,
                                  now)
        for dag_id, fire in list(self._fire_at.items()):
            if fire <= now + 1e-3:
                self._fire_at.pop(dag_id, None)
                self._per_dag(dag_id, "scheduling", self._schedule_dag, dag_id, max(now, fire))
        self.engine.flush()
        self._consume_datasets(now)
        self.alerts.escalate(now)
        due = [self._rescan_at, *self._fire_at.values()]
        if any(d.sla for d in self.dags.values()):
            self.slas.check(self.dags, now)
            due.append(now + SLA_CHECK)
        if self._watched or self.freshness.stale:
            fresh_due = self.freshness.check(self._watched, now)
            if fresh_due is not None:
                due.append(fresh_due)
        return min(due)

    def _arm(self, at: float | None) -> None:
        """Have ``tick`` run at ``at`` (once, however often that time is asked for)."""
        if at is None or at in self._armed:
            return
        self._armed.add(at)

        def timed(now: float) -> None:
            self._armed.discard(at)
            self._arm(self.tick(now))

        # Only a rescan is routine: a clock that skips idle time may jump past it.
        routine = at == self._rescan_at and at not in self._fire_at.values()
        self.engine.call_at(at, timed, routine=routine)

    def _store_recovered(self, error: str, since: float, now: float) -> None:
        """The database takes writes again: catch up on what the outage held back (a changed
        file, runs to create), and alert when it lasted long (an alert acked for an earlier
        outage is resolved, so this one is raised anew)."""
        if now - since >= self.alert_after:
            self.alerts.resolve_matching("", "", None, now, (OUTAGE_ALERT,), states=("acked",))
            self.alerts.raise_alert(OUTAGE_ALERT, "", summary=(
                f"the runner could not write to {self.store.path} for {now - since:.0f} s "
                f"({error}); it writes again since {iso(now)} and nothing recorded was lost"))
        self._start(now)

    # -- pipelines -------------------------------------------------------------------------
    def _files_snapshot(self) -> dict[str, tuple[int, int]]:
        snapshot = {}
        for path in pipeline_files(self.config.pipelines) if self.config.pipelines.is_dir() else []:
            try:
                st = path.stat()
            except OSError:
                continue
            snapshot[str(path)] = (st.st_mtime_ns, st.st_size)
        return snapshot

    def _files_changed(self, now: float) -> None:
        """The folder watch has news: a pipeline file may have changed."""
        if self.watch is not None and self.watch.changed():
            self._reload(now)

    def _rescan_files(self, now: float) -> None:
        """Reload what changed in the pipelines folder: as the folder watch tells (its events
        are queued as a file is written, before the command that follows an edit wakes the
        runner), and every FULL_SCAN by looking at every file anyway, for changes the kernel
        does not see (a network mount); without a watch, every file at every look."""
        if self.watch is None or now >= self._full_scan_at:
            self._full_scan_at = now + FULL_SCAN
            self._reload(now)
        elif self.watch.changed():
            self._reload(now)

    def _reload(self, now: float, force: bool = False) -> None:
        snapshot = self._files_snapshot()
        if snapshot == self._snapshot and not force:
            return
        result = load_folder(self.config.pipelines, self.config.dag_file_timeout)
        aside = {dag_id: entry for dag_id, entry in self._aside.items()
                 if dag_id in result.dags and snapshot.get(entry[0]) == entry[1]}
        for dag_id in aside:  # set aside until its file changes
            del result.dags[dag_id]
        broken_files = {e.fileloc for e in result.errors}
        kept = {dag_id: spec for dag_id, spec in self.dags.items()
                if dag_id not in result.dags and spec.fileloc in broken_files
                and spec.fileloc in snapshot}
        self.dags = {**kept, **result.dags}  # a broken file keeps its last good DAGs
        self.alerts.dags = self.dags
        toml = str(self.config.home / "flowtui.toml")
        self._watched, stale_errors = freshness_policies(self.dags, self.config.raw)
        problems = (self.alert_config.errors + dag_policy_errors(self.alert_config, self.dags)
                    + stale_errors)
        result.errors.extend(LoadError(toml, None, p) for p in problems)
        result.files.append(toml)
        record_load(self.store, result)
        self.store.set_active(self.dags)
        if aside != self._aside:
            self._aside = aside
            self._record_aside(now)
        self._snapshot = snapshot  # only now: a reload cut short by an outage is done again
        for dag_id in list(self.dags):
            self._per_dag(dag_id, "scheduling", self._schedule_dag, dag_id, now)

    # -- a DAG that cannot be scheduled ----------------------------------------------------
    def _per_dag(self, dag_id: str, what: str, work: Callable[..., Any], *args: Any) -> None:
        """Do one DAG's part of a pass; if it raises, set that DAG aside and go on with the
        others (the database being unwritable is not the DAG's fault: that goes up)."""
        try:
            work(*args)
        except Exception as exc:
            if outage(exc) is not None:
                raise
            self._set_aside(dag_id, what, exc)

    def _set_aside(self, dag_id: str, what: str, exc: Exception) -> None:
        dag = self.dags.pop(dag_id, None)
        if dag is None:
            return
        self.alerts.dags = self.dags
        self._fire_at.pop(dag_id, None)
        message = (f"DAG {dag_id}: {what} failed ({type(exc).__name__}: {exc}); the runner "
                   "set it aside until this file changes")
        self.store.health.report(f"{dag.fileloc}: {message}")
        self._aside[dag_id] = (dag.fileloc, self._snapshot.get(dag.fileloc), message)
        self._record_aside(self.clock.now())
        self.store.set_active(self.dags)

    def _record_aside(self, now: float) -> None:
        self.store.set_runner_errors(ImportError_(fileloc, None, message, now)
                                     for fileloc, _, message in self._aside.values())

    # -- scheduling ------------------------------------------------------------------------
    def _paused(self, dag_id: str) -> bool:
        return self.store.is_paused(dag_id)

    def _schedule_dag(self, dag_id: str, now: float) -> None:
        """Create the runs that are due (catch-up or the latest), then arm the next fire."""
        dag = self.dags.get(dag_id)
        if dag is None or not dag.schedule or self._paused(dag_id):
            self._fire_at.pop(dag_id, None)
            return
        due = due_intervals(dag, self.store.last_scheduled(dag_id), now)
        for interval in due:
            self._create_scheduled(dag, interval.start, interval.end, now)
        if due:
            self.store.notify_runners()  # runners on other hosts take what waits queued
        self._start_queued(dag_id, now)
        fire = next_interval_end(dag, self.store.last_scheduled(dag_id), now)
        if fire is None:
            self._fire_at.pop(dag_id, None)
            return
        self._fire_at[dag_id] = fire
        self._arm(fire)

    def _create_scheduled(self, dag: DagSpec, start: float, end: float, now: float) -> None:
        """Create the interval's run; it starts here at once when the DAG has a free run slot
        (else it waits queued, in logical date order)."""
        run_id = f"scheduled__{iso(start)}"
        tasks = [(t.task_id, t.max_tries, t.pool, t.pool_slots, dag.priority[t.task_id])
                 for t in dag.tasks.values()]
        starts = self._serves(dag) and self._free_runs(dag) > 0 and \
            not self.store.has_queued(dag.dag_id)
        try:
            run = self.store.create_run(
                dag_id=dag.dag_id, run_id=run_id, run_type="scheduled", logical_date=start,
                data_interval_start=start, data_interval_end=end, conf={},
                state=RunState.RUNNING if starts else RunState.QUEUED,
                runner_id=self.runner_id if starts else None, tasks=tasks,
                actor=self.engine.actor)
        except StoreError:
            return  # already created (by an earlier life of this daemon)
        if starts:
            self.engine.start_run(dag, run)

    # -- datasets (SPEC 9) -----------------------------------------------------------------
    def _consume_datasets(self, now: float) -> None:
        """Create the runs that dataset events call for: one per consumer and partition whose
        every dataset has a new event (``match: any``: one for any new events)."""
        self.engine.flush()  # the events this looks for are committed first
        for dag in list(self.dags.values()):
            if dag.datasets is not None and not self._paused(dag.dag_id):
                self._per_dag(dag.dag_id, "consuming dataset events", self._consume_dag, dag,
                              now)
        if self._watched or self.freshness.stale:  # a new event resolves its dataset's staleness at once
            self.freshness.check(self._watched, now)

    def _consume_dag(self, dag: DagSpec, now: float) -> None:
        trigger = dag.datasets
        assert trigger is not None
        found = self.store.datasets.readiness(dag.dag_id, trigger.datasets, trigger.match)
        tasks = [(t.task_id, t.max_tries, t.pool, t.pool_slots, dag.priority[t.task_id])
                 for t in dag.tasks.values()]
        for partition, events in found.ready.items():
            day = partition_day(partition, dag.timezone)
            logical = day if day is not None else now
            run_id = consumer_run_id(partition, now, dag.timezone)
            starts = self._serves(dag) and self._free_runs(dag) > 0 and \
                not self.store.has_queued(dag.dag_id)
            run = self.store.datasets.create_consumer_run(
                dag.dag_id, trigger.match, partition, events, run_id=run_id, run_type="dataset",
                logical_date=logical, data_interval_start=logical,
                data_interval_end=logical if day is None else logical + 86400, conf={},
                state=RunState.RUNNING if starts else RunState.QUEUED,
                runner_id=self.runner_id if starts else None, backfill_id=None, tasks=tasks,
                cause="dataset", actor=self.engine.actor,
                detail=", ".join(f"{name} {partition}" for name in events))
            if run is not None and starts:
                self.engine.start_run(dag, run)
        self.engine.flush()

    def _serves(self, dag: DagSpec) -> bool:
        """Whether this runner may start the DAG's runs: it serves the queue of one of its
        first tasks (a later task in a queue it does not serve is offered to the runners that
        serve it: ``Remote.offer``)."""
        return self.queues is None or bool(_root_queues(dag) & self.queues)

    def _serves_any(self, dag: DagSpec) -> bool:
        """Whether one of the DAG's tasks is in a queue this runner serves."""
        return self.queues is None or any(t.queue in self.queues for t in dag.tasks.values())

    def _can_advance(self, dag: DagSpec, run: Any) -> bool:
        """Whether this runner can take a run no live runner owns and do something for it: a
        try of it to settle (its runner died), a task in a queue served here that is due or
        whose upstreams are all done, or its dagrun_timeout to apply (it passed while the run
        waited for a runner serving its next queue: its adoption times it out at once)."""
        if self.queues is None:
            return True
        if dag.dagrun_timeout and run.start_date is not None and \
                self.clock.now() >= run.start_date + dag.dagrun_timeout and self._serves_any(dag):
            return True
        states = {t.task_id: TaskState(t.state) for t in self.store.task_instances(run.pk)}
        for task_id, state in states.items():
            spec = dag.tasks.get(task_id)
            if state in (TaskState.RUNNING, TaskState.QUEUED):
                return True
            if spec is None or state in TERMINAL or spec.queue not in self.queues:
                continue
            if state != TaskState.NONE or all(
                    states.get(up, TaskState.NONE) in TERMINAL for up in spec.deps):
                return True
        return False

    def _free_runs(self, dag: DagSpec) -> int:
        if self.store.kind == "postgresql":  # max_active_runs holds across hosts
            return dag.max_active_runs - self.store.active_runs(dag.dag_id)
        running = sum(1 for live in self.engine.runs.values()
                      if live.dag.dag_id == dag.dag_id and live.backfill_id is None)
        return dag.max_active_runs - running

    def _start_queued(self, dag_id: str, now: float) -> None:
        dag = self.dags.get(dag_id)
        if dag is None:
            return
        if not self._serves(dag):
            return  # a runner serving its queues takes its runs
        start_backfill_runs(self.engine, self.store, dag, now)  # pausing stops the schedule only
        if self._paused(dag_id):
            self._explain_queued(dag_id, "DAG paused")
            return
        free = self._free_runs(dag)
        if free > 0:
            cap = (dag_id, dag.max_active_runs) if self.store.kind == "postgresql" else None
            for run in self.store.queued_runs(dag_id, limit=free):
                if run.pk in self.engine.runs or not self._my_turn(run, now) or \
                        not claim(self.store, run, self.runner_id, cap):
                    continue  # ours already, another's turn, or another took it
                if run.start_date is None:  # never started: every task is as created
                    self.engine.start_run(dag, run)
                else:  # started before (an operator's action left it queued): carry on
                    self.engine.adopt_run(dag, run, now)
            # No commit of its own: the run's move to running rides with its first tasks'
            # launch, written before they are spawned in the loop's next turn (one transaction
            # fewer between a trigger and its first task; the claim already marks it taken).
        self._explain_queued(dag_id, f"max_active_runs reached ({dag.max_active_runs}/"
                                     f"{dag.max_active_runs} runs running)")

    def _my_turn(self, run: Any, now: float) -> bool:
        """Several hosts (SPEC 10): a queued run goes to the runner with the fewest runs in
        hand, so the work spreads (the runner that just finished a run would otherwise take
        every next one first); one waiting longer than TURN_WAIT goes to whoever looks."""
        if self.store.kind != "postgresql" or now - run.updated_at > TURN_WAIT:
            return True
        loads = self.store.runner_loads(now)
        return not loads or loads.get(self.runner_id, 0) <= min(loads.values())

    def _explain_unserved(self, now: float) -> None:
        """A queued run of a DAG that no live runner serves (`runner --queues` leaves out one
        of its tasks' queues) would wait without a word: say so on its tasks."""
        waiting = self.store.queued_dag_ids()
        served = self.store.served_queues(now) if waiting else []
        for dag_id in sorted(waiting):
            dag = self.dags.get(dag_id)
            if dag is None or self._serves(dag):
                continue  # ours to start, or gone
            needed = _root_queues(dag)
            if any(queues is None or needed & queues for queues in served):
                continue  # a runner serving it will start it
            names = ",".join(sorted(needed))
            self._explain_queued(dag_id, f"no live runner serves the queue of its first tasks "
                                         f"({names}): start 'flowtui runner --queues {names}' "
                                         f"on a host")

    def _explain_queued(self, dag_id: str, reason: str) -> None:
        """Say why the tasks of runs still queued are not running."""
        self.engine.changes.queued_reason(dag_id, reason, self.clock.now())

    # -- adoption and operator requests ----------------------------------------------------
    def _adopt_orphans(self, now: float) -> None:
        for run in self.store.list_runs(state="running"):
            if run.pk in self.engine.runs or run.runner_id == self.runner_id:
                continue
            if live_owner(self.store, run.runner_id) is not None:
                continue
            dag = self.dags.get(run.dag_id)
            if dag is not None and self._can_advance(dag, run) and \
                    claim(self.store, run, self.runner_id):
                self._per_dag(dag.dag_id, f"adopting run {run.run_id}", self.engine.adopt_run,
                              dag, run, now)
                self._host_lost(run.runner_id, f"its runs are taken over here (first: "
                                               f"{run.dag_id} {run.run_id})", now)

    def _executor_lost(self, runner_id: int, task: Any, now: float) -> None:
        live = task.run
        self._host_lost(runner_id, f"its tries are retried (first: {live.dag.dag_id} "
                                   f"{live.run_id} {task.task_id})", now)

    def _host_lost(self, runner_id: int | None, what: str, now: float) -> None:
        """A run or try taken from a runner on another host that went silent past its lease:
        page (SPEC 10), once while the host stays away."""
        record = self.store.runner(runner_id) if runner_id is not None else None
        if self.store.kind != "postgresql" or record is None or record.stopped_at is not None \
                or record.hostname == host_name():
            return
        self.alerts.raise_alert(
            "host_lost", "", task_id=record.hostname, now=now,
            summary=f"host {record.hostname} lost: its runner was silent for "
                    f"{now - record.heartbeat_at:.0f} s (lease {record.lease or 60:g} s); "
                    f"{what}")

    def _hosts_back(self, now: float) -> None:
        """A lost host whose runner beats again (or a new one there) resolves its alert."""
        for alert in self.store.alerts.newest(include_resolved=False, limit=50):
            if alert.kind == "host_lost" and any(
                    r.hostname == alert.task_id and r.stopped_at is None and
                    now - r.heartbeat_at < (r.lease or 60) for r in self.store.views.runners(50)):
                self.alerts.resolve_matching("", "", alert.task_id, now, ("host_lost",))

    def _on_wake(self, now: float) -> None:
        self.engine.flush()  # what was applied last time is in the store before we look again
        self._rescan_files(now)  # a trigger right after an edit must see the edit
        self._wake_sender()  # an ack or resolve from the CLI may have queued deliveries
        for request in self.store.pending_requests():
            live = self.engine.runs.get(request.run_pk)
            if live is None:
                run = self.store.get_run_by_pk(request.run_pk)
                dag = self.dags.get(run.dag_id) if run else None
                if run is None or dag is None:
                    self.engine.changes.request_done(request.id, "DAG not loaded", now)
                    continue
                if not self._serves_any(dag):
                    continue  # a runner serving the DAG's queues applies it
                if live_owner(self.store, run.runner_id) not in (None, (self.runner_id, os.getpid())):
                    continue  # another live runner owns it and applies it
                if not claim(self.store, run, self.runner_id):
                    continue  # another runner took it since: it applies the request
                self._per_dag(dag.dag_id, "applying an operator request", self._apply,
                              dag, run, request, now)
                continue
            self.engine.apply(request, live, now)
        self._adopt_orphans(now)
        self._consume_datasets(now)  # an emit from the CLI wakes us
        waiting = self.store.queued_dag_ids()  # one read, not a few a DAG (1,000 DAGs)
        for dag_id in list(self.dags):
            if dag_id in waiting:
                self._per_dag(dag_id, "starting queued runs", self._start_queued, dag_id, now)
            if dag_id in self.dags and dag_id not in self._fire_at:
                # unpaused since we last looked
                self._per_dag(dag_id, "scheduling", self._schedule_dag, dag_id, now)

    def _apply(self, dag: DagSpec, run: Any, request: Any, now: float) -> None:
        self.engine.apply(request, self.engine.adopt_run(dag, run, now, settle=False), now)

    def _on_run_finished(self, live: LiveRun) -> None:
        now = self.clock.now()
        dag = self.dags.get(live.dag.dag_id, live.dag)
        self.engine.flush()  # the run's end must be in the store before runs are counted
        if live.state.value == "failed" and dag.circuit_breaker:
            limit = int(dag.circuit_breaker.get("consecutive_failures", 0) or 0)
            if limit and self.store.consecutive_failures(dag.dag_id) >= limit:
                why = f"circuit breaker: {limit} failed runs in a row"
                self.store.pause_dag(dag.dag_id, why, user="runner")
                self.alerts.raise_alert("circuit_open", dag.dag_id, summary=f"DAG paused: {why}")
        if live.state.value == "success":
            self.alerts.resolve_matching(dag.dag_id, live.run_id, None, now, RESOLVED_BY_RUN)
            self.alerts.resolve_matching(dag.dag_id, "", None, now, ("circuit_open",))
        if live.backfill_id is not None:
            finish_if_done(self.store, live.backfill_id, actor=self.engine.actor)
        self.engine.call_at(now, lambda at, d=dag.dag_id: self._per_dag(
            d, "starting queued runs", self._start_queued, d, at))
        if self.store.kind == "postgresql" and self.store.has_queued(dag.dag_id):
            self.store.notify_runners()  # a run slot is free: every host may take the next


    # -- alerts and SLAs --------------------------------------------------------------------
    def _on_task_end(self, task: Any, state: Any, kill_reason: str | None) -> None:
        if self.engine.datasets_written:  # consumers decide once the events are committed
            self.engine.datasets_written = False
            self.engine.call_at(self.clock.now(), self._consume_datasets)
        live = task.run
        dag_id, run_id, task_id = live.dag.dag_id, live.run_id, task.task_id
        value = state.value
        if kill_reason in ("zombie", "hung"):
            self.alerts.raise_alert(kill_reason, dag_id, run_id, task_id, task.reason)
        if value == "failed":
            self.alerts.raise_alert("task_failed", dag_id, run_id, task_id,
                                    task.reason or "failed")
        elif value == "up_for_retry" and self.alerts.policies(dag_id, "task_retry"):
            self.alerts.raise_alert("task_retry", dag_id, run_id, task_id, task.reason)
        elif value == "success":
            self.alerts.resolve_matching(dag_id, run_id, task_id, self.clock.now(),
                                         ("task_failed", "task_retry", "zombie", "hung"))


RESOLVED_BY_RUN = ("task_failed", "task_retry", "zombie", "hung", "sla_at_risk", "sla_miss")
SLA_CHECK = 1.0  # SLA verdicts move with time (a prediction passes its deadline)


def due_intervals(dag: DagSpec, last_start: float | None, now: float) -> list:
    """The scheduled runs to create now: every missed one with catchup, else the latest."""
    if dag.catchup:
        return intervals_between(dag, last_start, now)
    latest = latest_interval(dag, now)
    if latest is None or (last_start is not None and latest.start <= last_start + 1e-6):
        return []
    return [latest]


def last_scheduled(store: Store, dag_id: str) -> float | None:
    """The logical date of the DAG's newest scheduled run: where its schedule carries on."""
    return store.last_scheduled(dag_id)


def _root_queues(dag: DagSpec) -> set[str]:
    """The queues of the tasks a run of the DAG starts with."""
    return {task.queue for task in dag.tasks.values() if not task.deps}
