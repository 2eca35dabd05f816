"""``flowtui runner``: the scheduler daemon of one home.

It creates scheduled runs on time, starts queued ones within ``max_active_runs``, adopts the
runs of dead runners, applies operator requests, watches the pipelines folder, and leaves
running tasks alone when it stops (the next runner adopts them).
"""
from __future__ import annotations

import fcntl
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any

from flowtui.runner.actions import live_owner
from flowtui.runner.adoption import adopt_run
from flowtui.runner.alerting import Alerts, dag_policy_errors, parse_alerting
from flowtui.runner.backfill import finish_if_done, start_backfill_runs
from flowtui.runner.clock import iso
from flowtui.runner.config import Config
from flowtui.runner.engine import Engine, LiveRun
from flowtui.runner.executor import process_start_time
from flowtui.runner.loader import LoadError, LoadResult, load_folder, pipeline_files
from flowtui.runner.model import DagSpec
from flowtui.runner.notify import Sender
from flowtui.runner.operator import apply_request, pending_requests
from flowtui.runner.schedule import intervals_between, latest_interval, next_interval_end
from flowtui.store import Store, StoreError
from flowtui.store.models import DagRecord, ImportError_

SCAN_INTERVAL = 2.0


class RunnerError(Exception):
    """The daemon cannot start; the message says why."""


def acquire_lock(home: Path) -> IO[str]:
    """One daemon per home: an exclusive lock the kernel drops when the process dies."""
    home.mkdir(parents=True, exist_ok=True)
    handle = open(home / "runner.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunnerError(f"a runner is already alive for {home} (pid {holder}); "
                          "stop it first or use another --home") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def sync_dags(store: Store, result: LoadResult) -> None:
    now = time.time()
    records = [DagRecord(d.dag_id, d.fileloc, d.description, d.schedule, d.timezone, d.owner,
                         d.tags, d.paused, None, True, len(d.tasks), now)
               for d in result.dags.values()]
    errors = [ImportError_(e.fileloc, e.line, e.message, now) for e in result.errors]
    store.sync_dags(records, errors, result.files)


class Daemon:
    def __init__(self, config: Config, *, scan_interval: float = SCAN_INTERVAL) -> None:
        self.config = config
        self.scan_interval = scan_interval
        self.lock = acquire_lock(config.home)
        self.store = Store.open(config.db_path)
        self.runner_id = self.store.register_runner("daemon", process_start_time(os.getpid()))
        self.engine = Engine(self.store, config, self.runner_id, daemon=True)
        self.engine.on_wake = self._on_wake
        self.engine.on_run_finished = self._on_run_finished
        self.dags: dict[str, DagSpec] = {}
        self._snapshot: dict[str, tuple[int, int]] = {}
        self._fire_at: dict[str, float] = {}
        self.alert_config = parse_alerting(config.raw, str(config.home / "flowtui.toml"))
        self.sender = Sender(config.db_path, self.alert_config)
        self.alerts = Alerts(self.store, self.alert_config, self.dags, self.sender.wake)
        self.engine.on_task_end = self._on_task_end
        self._sla_seen: dict[tuple[str, str], str] = {}

    # -- lifecycle -------------------------------------------------------------------------
    def serve(self) -> None:
        engine = self.engine
        engine.install_signal_handlers()
        signal.signal(signal.SIGUSR1, lambda *_: None)  # wakes the loop through the wake fd
        now = time.time()
        for error in self.alert_config.errors:
            print(f"flowtui runner: {error}", file=sys.stderr, flush=True)
        self.sender.start()
        self._reload(now, force=True)
        self._adopt_orphans(now)
        self._on_wake(now)
        engine.call_at(now + self.scan_interval, self._rescan)
        engine.call_at(now + ALERT_TICK, self._alert_tick)
        try:
            engine.run_forever()
        finally:
            self.sender.stop()
            engine.close()
            self.store.stop_runner(self.runner_id)
            self.lock.close()

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

    def _rescan(self, now: float) -> None:
        self.engine.call_at(time.time() + self.scan_interval, self._rescan)  # first: never lost
        self._reload(now)
        self._adopt_orphans(now)

    def _reload(self, now: float, force: bool = False) -> None:
        snapshot = self._files_snapshot()
        if snapshot == self._snapshot and not force:
            return
        self._snapshot = snapshot
        result = load_folder(self.config.pipelines, self.config.dag_file_timeout)
        broken_files = {e.fileloc for e in result.errors}
        kept = {dag_id: spec for dag_id, spec in self.dags.items()
                if dag_id not in result.dags and spec.fileloc in broken_files
                and spec.fileloc in snapshot}
        self.dags = {**kept, **result.dags}  # a broken file keeps its last good DAGs
        self.alerts.dags = self.dags
        toml = str(self.config.home / "flowtui.toml")
        problems = self.alert_config.errors + dag_policy_errors(self.alert_config, self.dags)
        result.errors.extend(LoadError(toml, None, p) for p in problems)
        result.files.append(toml)
        sync_dags(self.store, result)
        with self.store.transaction() as conn:
            if self.dags:
                marks = ",".join("?" * len(self.dags))
                conn.execute(f"UPDATE dags SET is_active = (dag_id IN ({marks}))", list(self.dags))
            else:
                conn.execute("UPDATE dags SET is_active = 0")
        for dag_id in self.dags:
            self._schedule_dag(dag_id, now)

    # -- scheduling ------------------------------------------------------------------------
    def _paused(self, dag_id: str) -> bool:
        row = self.store.conn.execute("SELECT paused FROM dags WHERE dag_id = ?", (dag_id,)).fetchone()
        return bool(row and row[0])

    def _last_scheduled(self, dag_id: str) -> float | None:
        row = self.store.conn.execute(
            "SELECT max(logical_date) FROM dag_runs WHERE dag_id = ? AND run_type = 'scheduled'",
            (dag_id,)).fetchone()
        return row[0] if row else None

    def _schedule_dag(self, dag_id: str, now: float) -> None:
        """Create the runs that are due (catch-up or the latest), then arm the next fire."""
        dag = self.dags.get(dag_id)
        if dag is None or not dag.schedule or self._paused(dag_id):
            self._fire_at.pop(dag_id, None)
            return
        for interval in due_intervals(dag, self._last_scheduled(dag_id), now):
            self._create_scheduled(dag, interval.start, interval.end)
        self._start_queued(dag_id, now)
        fire = next_interval_end(dag, self._last_scheduled(dag_id), now)
        if fire is None or self._fire_at.get(dag_id) == fire:
            return
        self._fire_at[dag_id] = fire
        self.engine.call_at(fire, lambda at, d=dag_id, f=fire: self._on_fire(d, f, at))

    def _on_fire(self, dag_id: str, fire: float, now: float) -> None:
        if self._fire_at.get(dag_id) != fire:
            return  # superseded by a reload or a pause
        self._fire_at.pop(dag_id, None)
        self._schedule_dag(dag_id, max(now, fire))

    def _create_scheduled(self, dag: DagSpec, start: float, end: float) -> None:
        run_id = f"scheduled__{iso(start)}"
        tasks = [(t.task_id, t.max_tries, t.pool, t.pool_slots, dag.priority[t.task_id])
                 for t in dag.tasks.values()]
        try:
            self.store.create_run(dag_id=dag.dag_id, run_id=run_id, run_type="scheduled",
                                  logical_date=start, data_interval_start=start,
                                  data_interval_end=end, conf={}, state="queued",
                                  runner_id=None, tasks=tasks)
        except StoreError:
            pass  # already created (by an earlier life of this daemon)

    def _start_queued(self, dag_id: str, now: float) -> None:
        dag = self.dags.get(dag_id)
        if dag is None:
            return
        start_backfill_runs(self.engine, self.store, dag, now)  # pausing stops the schedule only
        if self._paused(dag_id):
            self._explain_queued(dag_id, "DAG paused")
            return
        running = sum(1 for live in self.engine.runs.values()
                      if live.dag.dag_id == dag_id and live.backfill_id is None)
        free = dag.max_active_runs - running
        if free > 0:
            for run in self.store.queued_runs(dag_id, limit=free):
                if run.pk not in self.engine.runs:
                    adopt_run(self.engine, dag, run, now)
            self.engine._flush()  # recorded as running at once (a cancel or a reader sees it)
        self._explain_queued(dag_id, f"max_active_runs reached ({dag.max_active_runs}/"
                                     f"{dag.max_active_runs} runs running)")

    def _explain_queued(self, dag_id: str, reason: str) -> None:
        """Say why the tasks of runs still queued are not running."""
        self.engine._ops.append((
            "UPDATE task_instances SET reason = ?, updated_at = ? WHERE state = 'none' AND "
            "reason != ? AND run_pk IN (SELECT id FROM dag_runs WHERE dag_id = ? AND "
            "state = 'queued' AND backfill_id IS NULL)", (reason, time.time(), reason, dag_id)))

    # -- adoption and operator requests ----------------------------------------------------
    def _adopt_orphans(self, now: float) -> None:
        for run in self.store.list_runs(state="running"):
            if run.pk in self.engine.runs or run.runner_id == self.runner_id:
                continue
            if live_owner(self.store, run.runner_id) is not None:
                continue
            dag = self.dags.get(run.dag_id)
            if dag is not None:
                adopt_run(self.engine, dag, run, now)

    def _on_wake(self, now: float) -> None:
        self.engine._flush()  # what was applied last time is in the store before we look again
        self._reload(now)  # a trigger right after an edit must see the edit (cheap: stats only)
        self.sender.wake()  # an ack or resolve from the CLI may have queued deliveries
        for request in pending_requests(self.engine):
            run_pk = request[3]
            live = self.engine.runs.get(run_pk)
            if live is None:
                run = self.store.get_run_by_pk(run_pk)
                dag = self.dags.get(run.dag_id) if run else None
                if run is None or dag is None:
                    self.engine._ops.append(("UPDATE requests SET done_at = ?, result = ? "
                                             "WHERE id = ?", (now, "DAG not loaded", request[0])))
                    continue
                if live_owner(self.store, run.runner_id) not in (None, (self.runner_id, os.getpid())):
                    continue  # another live runner owns it and applies it
                live = adopt_run(self.engine, dag, run, now, settle=False)
            apply_request(self.engine, live, request, now)
        self._adopt_orphans(now)
        for dag_id in self.dags:
            self._start_queued(dag_id, now)
            if dag_id not in self._fire_at:
                self._schedule_dag(dag_id, now)  # unpaused since we last looked

    def _on_run_finished(self, live: LiveRun) -> None:
        now = time.time()
        dag = self.dags.get(live.dag.dag_id, live.dag)
        self.engine._flush()  # the run's end must be in the store before runs are counted
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
            finish_if_done(self.store, live.backfill_id)
        self.engine.call_at(now, lambda at, d=dag.dag_id: self._start_queued(d, at))


    # -- alerts and SLAs --------------------------------------------------------------------
    def _on_task_end(self, task: Any, state: Any, kill_reason: str | None) -> None:
        live = task.run
        dag_id, run_id, task_id = live.dag.dag_id, live.run_id, task.task_id
        value = state.value
        if kill_reason in ("zombie", "hung"):
            self.alerts.raise_alert(kill_reason, dag_id, run_id, task_id, task.reason)
        if value == "failed":
            self.alerts.raise_alert("task_failed", dag_id, run_id, task_id,
                                    task.reason or "failed")
        elif value == "up_for_retry" and self.alerts._policies(dag_id, "task_retry"):
            self.alerts.raise_alert("task_retry", dag_id, run_id, task_id, task.reason)
        elif value == "success":
            self.alerts.resolve_matching(dag_id, run_id, task_id, time.time(),
                                         ("task_failed", "task_retry", "zombie", "hung"))

    def _alert_tick(self, now: float) -> None:
        self.engine.call_at(time.time() + ALERT_TICK, self._alert_tick)  # first: never lost
        self.engine._flush()
        self.alerts.escalate(now)
        self._check_slas(now)

    def _check_slas(self, now: float) -> None:
        from flowtui.runner.sla import active_statuses

        if not any(d.sla for d in self.dags.values()):
            return
        statuses = active_statuses(self.store, self.dags, now)
        current = {(i.dag_id, i.run_id) for i in statuses}
        for key in [k for k in self._sla_seen if k not in current]:
            del self._sla_seen[key]  # out of the SLA window: forget it
        for item in statuses:
            key = (item.dag_id, item.run_id)
            if self._sla_seen.get(key) == item.verdict:
                continue
            self._sla_seen[key] = item.verdict
            if item.verdict == "at risk":
                self.alerts.raise_alert(
                    "sla_at_risk", item.dag_id, item.run_id, "",
                    f"predicted to finish at {iso(item.predicted)}, after the deadline "
                    f"{iso(item.deadline)} (critical path: {' -> '.join(item.critical_path)})")
            elif item.verdict == "missed" and item.run_state != "success":
                self.alerts.raise_alert("sla_miss", item.dag_id, item.run_id, "",
                                        f"not done by its deadline {iso(item.deadline)}")


RESOLVED_BY_RUN = ("task_failed", "task_retry", "zombie", "hung", "sla_at_risk", "sla_miss")
ALERT_TICK = 1.0


def due_intervals(dag: DagSpec, last_start: float | None, now: float) -> list:
    """The scheduled runs to create now: every missed one with catchup, else the latest."""
    if dag.catchup:
        return intervals_between(dag, last_start, now)
    latest = latest_interval(dag, now)
    if latest is None or (last_start is not None and latest.start <= last_start + 1e-6):
        return []
    return [latest]
