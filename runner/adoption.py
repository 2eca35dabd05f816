"""Taking over runs from the store: after a runner died, or for an operator's action."""
from __future__ import annotations

import os
import selectors
from typing import TYPE_CHECKING, Any

from flowtui.runner import executor, protocol
from flowtui.runner.model import DagSpec
from flowtui.runner.trigger_rules import Counts
from flowtui.store import RunState, TaskState
from flowtui.store.models import Run

if TYPE_CHECKING:
    from flowtui.runner.engine import Engine, LiveRun, LiveTask

S = TaskState
_TERMINAL = frozenset({S.SUCCESS, S.FAILED, S.UPSTREAM_FAILED, S.SKIPPED})


def adopt_run(engine: "Engine", dag: DagSpec, run: Run, now: float, *,
              settle: bool = True) -> "LiveRun":
    """Rebuild a run in memory from the store and carry on from where it stands.

    A running task whose process still lives (same pid and start time) is watched to its end;
    one whose process is gone ends with the exit status its shell wrote, or as a zombie.
    """
    from flowtui.runner.engine import LiveRun, LiveTask, run_context

    if run.pk in engine.runs:  # already ours: taking it twice would run its tasks twice
        return engine.runs[run.pk]
    store = engine.store
    tis = {t.task_id: t for t in store.task_instances(run.pk)}
    live = LiveRun(pk=run.pk, dag=dag, run_id=run.run_id, run_type=run.run_type,
                   logical_date=run.logical_date, data_interval_start=run.data_interval_start,
                   data_interval_end=run.data_interval_end, conf=run.conf,
                   seq=next(engine._run_seq), started_at=run.start_date or now,
                   backfill_id=run.backfill_id)
    live.base_context = run_context(dag, live)
    live.log_base = os.path.join(str(engine.config.logs_dir), dag.dag_id, run.run_id)
    order = {t: i for i, t in enumerate(dag.topological_order())}
    for task_id, spec in dag.tasks.items():
        ti = tis.get(task_id)
        task = LiveTask(spec=spec, run=live, order=order[task_id], priority=dag.priority[task_id],
                        max_tries=ti.max_tries if ti else spec.max_tries,
                        counts=Counts(len(spec.deps)))
        if ti is not None:
            task.state = S(ti.state)
            task.try_number = ti.try_number
            task.reason = ti.reason
            task.next_try_at = ti.next_try_at
            task.first_poke_at = ti.first_poke_at
            if ti.pool != spec.pool:
                task.pool_override = ti.pool
        live.tasks[task_id] = task
    if len(tis) < len(dag.tasks):  # tasks added to the DAG since the run was created
        store.add_task_instances(run.pk, dag.dag_id, run.run_id, [
            (t.task_id, t.max_tries, t.spec.pool, t.spec.pool_slots, t.priority)
            for t in live.tasks.values() if t.task_id not in tis])
    for task in live.tasks.values():
        if task.state in _TERMINAL:
            for child in dag.downstream[task.task_id]:
                live.tasks[child].counts.add(task.state.value)
    live.unfinished = sum(1 for t in live.tasks.values() if t.state not in _TERMINAL)
    engine.runs[live.pk] = live
    if not settle and live.unfinished == 0:
        live.state = RunState(run.state)
        engine.runs.pop(live.pk, None)
        return live
    engine._ops.append(("UPDATE dag_runs SET state = 'running', runner_id = ?, "
                        "start_date = coalesce(start_date, ?), end_date = NULL, updated_at = ? "
                        "WHERE id = ?", (engine.runner_id, now, now, run.pk)))
    if run.state != RunState.RUNNING.value:
        engine._ops.append(("INSERT INTO events (at, kind, dag_id, run_id, old_state, new_state, "
                            "cause, detail) VALUES (?, 'run', ?, ?, ?, 'running', 'scheduler', ?)",
                            (now, dag.dag_id, run.run_id, run.state, "taken by this runner")))
    live.state = RunState.RUNNING
    if dag.dagrun_timeout:
        engine._timer(live.started_at + dag.dagrun_timeout, "dagrun_timeout", live)
    engine._make_log_dirs(live)
    attempts = {(t.task_id, t.try_number): t for t in store.tries(live.pk)}
    # Tries whose recorded pid cannot vouch for them are looked for by their mark, in one pass.
    leaders = executor.find_leaders({
        a.exit_path for task in live.tasks.values() if task.state in (S.RUNNING, S.QUEUED)
        for a in [attempts.get((task.task_id, task.try_number))]
        if a is not None and not (a.pid and a.pid_start
                                  and executor.same_process(a.pid, a.pid_start))})
    for task in sorted(live.tasks.values(), key=lambda t: t.order):
        _resume(engine, task, now, attempts, leaders)
    if live.unfinished == 0 and settle:
        engine._finish_run(live, now)
    return live


def _resume(engine: "Engine", task: "LiveTask", now: float, attempts: dict,
            leaders: dict[str, int]) -> None:
    state = task.state
    if state in (S.RUNNING, S.QUEUED):
        _resume_running(engine, task, now, attempts.get((task.task_id, task.try_number)),
                        leaders)
    elif state == S.UP_FOR_RETRY:
        engine._timer(task.next_try_at or now, "retry", (task, task.try_number))
    elif state == S.UP_FOR_RESCHEDULE:
        engine._timer(task.next_try_at or now, "reschedule", (task, task.try_number))
    elif state == S.SCHEDULED:
        task.state = S.NONE  # decided again from its upstreams, as a fresh task would be
        engine._evaluate(task, now)
    elif state == S.NONE:
        engine._evaluate(task, now)


def _resume_running(engine: "Engine", task: "LiveTask", now: float, attempt: Any,
                    leaders: dict[str, int]) -> None:
    live = task.run
    if attempt is None:  # the state says running but no try was written: start it afresh
        task.state = S.SCHEDULED
        task.try_number = max(0, task.try_number - 1)
        engine._schedule(task, now)
        return
    task.log_path, task.exit_path = attempt.log_path, attempt.exit_path
    task.started_at = attempt.start_date
    task.state = S.RUNNING
    pid = executor.locate(attempt.pid, attempt.pid_start, attempt.exit_path, leaders)
    if pid is not None:
        try:
            pidfd: int | None = os.pidfd_open(pid)
        except OSError:
            pidfd = None
        if pidfd is not None:
            engine._take_slots(task, +1)
            task.pid, task.pidfd = pid, pidfd
            task.pid_start = executor.process_start_time(pid)
            task.watch = protocol.LogWatch(task.log_path, last_activity=now)
            engine._running[pid] = task
            engine.selector.register(pidfd, selectors.EVENT_READ, task)
            if task.spec.execution_timeout:
                task.timeout_at = attempt.start_date + task.spec.execution_timeout
                engine._timer(task.timeout_at, "timeout", (task, task.try_number))
            engine._ops.append(("UPDATE tries SET runner_id = ?, pid = ?, pid_start = ? "
                                "WHERE run_pk = ? AND task_id = ? AND try_number = ?",
                                (engine.runner_id, pid, task.pid_start, live.pk, task.task_id,
                                 task.try_number)))
            engine._ops.append(("UPDATE task_instances SET pid = ? WHERE run_pk = ? "
                                "AND task_id = ?", (pid, live.pk, task.task_id)))
            return
    code = executor.read_exit_status(task.exit_path)
    if code is None and not os.path.exists(task.log_path):
        # The try was recorded but its process never started (the runner died in between: the
        # log file is the first thing the process makes). Nothing ran: start it afresh.
        engine._ops.append(("DELETE FROM tries WHERE run_pk = ? AND task_id = ? AND "
                            "try_number = ?", (live.pk, task.task_id, task.try_number)))
        task.state = S.SCHEDULED
        task.try_number -= 1
        engine._schedule(task, now)
        return
    # Whatever the shell left behind (a child that outlived it) must not run beside a retry.
    executor.kill_tree(None, task.exit_path)
    task.watch = protocol.LogWatch(task.log_path, last_activity=now)
    if code is not None:
        # It ended while no runner watched: its real code, and the time its shell wrote it.
        try:
            ended = min(now, os.stat(task.exit_path).st_mtime)
        except OSError:
            ended = now
        engine._end_try(task, code, None, ended)
    else:
        engine._end_try(task, None, "zombie", now)
