"""Operator actions (clear, retry, mark, kill): what each changes, and how it reaches the store.

The CLI and the TUI both call ``submit``. When a live runner owns the run, the action is queued
as a request (with its audit row, in one transaction), the runner is woken with SIGUSR1 and
applies it within milliseconds. When no runner lives, the change is written to the store here
and the run is left ``queued`` without an owner, for the next runner to adopt.
"""
from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass

from flowtui.runner import executor
from flowtui.runner.model import DagSpec
from flowtui.store import Store, TaskState, current_user
from flowtui.store.models import Run, TaskInstance

ACTIONS = ("clear", "retry", "mark", "kill")
MARKABLE = ("success", "failed", "skipped")
HEARTBEAT_STALE = 15.0  # a runner silent this long is dead, wherever it runs


class ActionError(Exception):
    """An action that cannot apply (unknown task, wrong state); the message says why."""


@dataclass(slots=True)
class Outcome:
    action: str
    run: Run
    task_ids: list[str]
    applied_by: str  # "runner <id>" or "store"
    detail: str = ""


def descendants(dag: DagSpec, task_ids: Iterable[str]) -> set[str]:
    found: set[str] = set()
    stack = list(task_ids)
    while stack:
        for child in dag.downstream.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def ancestors(dag: DagSpec, task_ids: Iterable[str]) -> set[str]:
    found: set[str] = set()
    stack = list(task_ids)
    while stack:
        for dep in dag.tasks[stack.pop()].deps:
            if dep not in found:
                found.add(dep)
                stack.append(dep)
    return found


def plan(dag: DagSpec, tis: dict[str, TaskInstance], task_ids: list[str], *,
         downstream: bool = False, upstream: bool = False, failed_only: bool = False) -> list[str]:
    """The tasks an action touches, in topological order (the list a confirmation shows)."""
    for task_id in task_ids:
        if task_id not in dag.tasks:
            raise ActionError(f"DAG {dag.dag_id!r} has no task {task_id!r}")
    selected = set(task_ids) or set(dag.tasks)
    if downstream:
        selected |= descendants(dag, selected)
    if upstream:
        selected |= ancestors(dag, selected)
    if failed_only:
        selected = {t for t in selected if tis.get(t) and tis[t].state in ("failed", "upstream_failed")}
    return [t for t in dag.topological_order() if t in selected]


def live_owner(store: Store, runner_id: int | None) -> tuple[int, int] | None:
    """(runner id, pid) of the runner if it is alive, else None."""
    if runner_id is None:
        return None
    row = store.conn.execute(
        "SELECT pid, pid_start, heartbeat_at, stopped_at, hostname FROM runners WHERE id = ?",
        (runner_id,)).fetchone()
    if row is None or row[3] is not None:
        return None
    pid, pid_start, heartbeat_at, _, hostname = row
    import socket

    if hostname == socket.gethostname():
        return (runner_id, pid) if executor.same_process(pid, pid_start) else None
    return (runner_id, pid) if time.time() - heartbeat_at < HEARTBEAT_STALE else None


def live_daemon(store: Store) -> tuple[int, int] | None:
    row = store.conn.execute("SELECT id FROM runners WHERE kind = 'daemon' AND stopped_at IS NULL "
                             "ORDER BY id DESC LIMIT 1").fetchone()
    return live_owner(store, row[0]) if row else None


def wake(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGUSR1)
    except (ProcessLookupError, PermissionError):
        pass


def submit(store: Store, dag: DagSpec, run: Run, action: str, task_ids: list[str], *,
           options: dict | None = None, user: str | None = None,
           wait: float = 5.0) -> Outcome:
    """Apply an operator action through the owning runner, or to the store when none lives."""
    options = dict(options or {})
    user = user or current_user()
    tis = {t.task_id: t for t in store.task_instances(run.pk)}
    affected = _check(dag, tis, action, task_ids, options)
    owner = live_owner(store, run.runner_id) or live_daemon(store)
    if owner is None and action in ("clear", "mark", "kill"):
        # No runner watches these processes: end them here, fully, before the store says they
        # ended, so the next runner can never start a try beside a live one.
        for task_id in affected:
            if tis[task_id].state == TaskState.RUNNING.value:
                _end_orphan(store, dag, run, tis[task_id])
    with store.transaction() as conn:
        store.audit(conn, action, dag_id=run.dag_id, run_id=run.run_id,
                    task_id=",".join(affected), detail={**options, "tasks": affected}, user=user)
        if owner is not None:
            cur = conn.execute(
                "INSERT INTO requests (at, user, action, run_pk, task_ids, options) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (time.time(), user, action, run.pk, json.dumps(affected), json.dumps(options)))
            request_id = int(cur.lastrowid or 0)
        else:
            apply_offline(store, conn, dag, run, tis, action, affected, options, user)
    if owner is None:
        return Outcome(action, run, affected, "store", "; ".join(
            already(t, options["state"]) for t in _unchanged(tis, action, affected, options)))
    wake(owner[1])
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        row = store.conn.execute("SELECT done_at, result FROM requests WHERE id = ?",
                                 (request_id,)).fetchone()
        if row and row[0] is not None:
            return Outcome(action, run, affected, f"runner {owner[0]}", row[1])
        time.sleep(0.005)
    return Outcome(action, run, affected, f"runner {owner[0]}",
                   "queued; the runner has not confirmed it yet")


def _check(dag: DagSpec, tis: dict[str, TaskInstance], action: str, task_ids: list[str],
           options: dict) -> list[str]:
    if action not in ACTIONS:
        raise ActionError(f"unknown action {action!r}")
    if action == "clear":
        affected = plan(dag, tis, task_ids, downstream=options.get("downstream", False),
                        upstream=options.get("upstream", False),
                        failed_only=options.get("failed_only", False))
        if not affected:
            raise ActionError("nothing to clear: no task matches (with --failed-only, none failed)")
        return affected
    if action == "mark":
        if options.get("state") not in MARKABLE:
            raise ActionError(f"--state must be one of {', '.join(MARKABLE)}")
        return plan(dag, tis, task_ids, downstream=options.get("downstream", False),
                    upstream=options.get("upstream", False))
    if not task_ids:
        raise ActionError(f"{action} needs a task")
    for task_id in task_ids:
        if task_id not in dag.tasks:
            raise ActionError(f"DAG {dag.dag_id!r} has no task {task_id!r}")
        state = tis[task_id].state
        if action == "retry" and state != TaskState.UP_FOR_RETRY.value:
            raise ActionError(f"task {task_id!r} is {state}, not up_for_retry; "
                              "use clear to run it again")
        if action == "kill" and state != TaskState.RUNNING.value:
            raise ActionError(f"task {task_id!r} is {state}, not running")
    return list(task_ids)


def apply_offline(store: Store, conn, dag: DagSpec, run: Run, tis: dict[str, TaskInstance],
                  action: str, affected: list[str], options: dict, user: str) -> None:
    """Write an action's effect straight to the store (no runner owns the run)."""
    now = time.time()
    cause = f"operator:{user}"

    def set_ti(task_id: str, state: str, reason: str, **extra: object) -> None:
        old = tis[task_id].state
        cols = {"state": state, "reason": reason, "updated_at": now, **extra}
        sql = ", ".join(f"{k} = ?" for k in cols)
        conn.execute(f"UPDATE task_instances SET {sql} WHERE run_pk = ? AND task_id = ?",
                     (*cols.values(), run.pk, task_id))
        conn.execute(
            "INSERT INTO events (at, kind, dag_id, run_id, task_id, try_number, old_state, "
            "new_state, cause, detail) VALUES (?, 'task', ?, ?, ?, ?, ?, ?, ?, ?)",
            (now, run.dag_id, run.run_id, task_id, tis[task_id].try_number or None, old, state,
             cause, reason))

    unchanged = set(_unchanged(tis, action, affected, options))
    if unchanged and len(unchanged) == len(affected):
        return  # every task already has that state: only the audit row is written
    for task_id in affected:
        ti = tis[task_id]
        if task_id in unchanged:
            continue
        if ti.state == "running" and action in ("clear", "mark", "kill"):
            _kill_orphan(conn, run, ti)
        if action == "clear":
            set_ti(task_id, "none", f"cleared by {user}", end_date=None, exit_code=None,
                   next_try_at=None, pid=None,
                   max_tries=ti.try_number + dag.tasks[task_id].retries + 1)
        elif action == "mark":
            # A task that already ended keeps its start and end (its duration feeds the
            # duration history and SLA predictions); only its state changes.
            set_ti(task_id, options["state"], f"marked {options['state']} by {user}",
                   end_date=now if ti.end_date is None or ti.state == "running" else ti.end_date,
                   pid=None)
        elif action == "retry":
            set_ti(task_id, "up_for_retry", f"retry now, requested by {user}", next_try_at=now)
        elif action == "kill":
            if ti.try_number < ti.max_tries:
                set_ti(task_id, "up_for_retry", f"killed by {user}", next_try_at=now, pid=None)
            else:
                set_ti(task_id, "failed", f"killed by {user}", end_date=now, pid=None)
    # The run goes back to the queue for the next runner unless every task is settled.
    states = {t: tis[t].state for t in tis}
    for task_id in affected:
        states[task_id] = {"clear": "none", "retry": "up_for_retry"}.get(
            action, options.get("state", "failed") if action == "mark" else "up_for_retry")
    terminal = {"success", "failed", "skipped", "upstream_failed"}
    if all(s in terminal for s in states.values()):
        leaves = dag.leaves()
        new = "failed" if any(states[t] in ("failed", "upstream_failed") for t in leaves) else "success"
        conn.execute("UPDATE dag_runs SET state = ?, end_date = COALESCE(end_date, ?), "
                     "updated_at = ? WHERE id = ?", (new, now, now, run.pk))
    else:
        new = "queued"
        conn.execute("UPDATE dag_runs SET state = 'queued', end_date = NULL, runner_id = NULL, "
                     "updated_at = ? WHERE id = ?", (now, run.pk))
    if new != run.state:
        conn.execute("INSERT INTO events (at, kind, dag_id, run_id, old_state, new_state, cause) "
                     "VALUES (?, 'run', ?, ?, ?, ?, ?)", (now, run.dag_id, run.run_id, run.state,
                                                         new, cause))


def _unchanged(tis: dict[str, TaskInstance], action: str, affected: list[str],
               options: dict) -> list[str]:
    """The tasks a mark leaves as they are: they have that state already."""
    if action != "mark":
        return []
    return [t for t in affected if tis[t].state == options.get("state")]


def already(task_id: str, state: str) -> str:
    """What a mark to the state a task already has says (it changes nothing)."""
    return f"{task_id} is already {state}; nothing changed"


def _end_orphan(store: Store, dag: DagSpec, run: Run, ti: TaskInstance) -> None:
    """The kill sequence for a running task no runner owns: SIGTERM, its kill_grace, SIGKILL."""
    attempt = next((t for t in store.tries(run.pk, ti.task_id)
                    if t.try_number == ti.try_number), None)
    if attempt is None:
        return
    pid = executor.locate(attempt.pid, attempt.pid_start, attempt.exit_path)
    left = executor.end_tree(pid, attempt.exit_path, dag.tasks[ti.task_id].kill_grace)
    if left:
        raise ActionError(f"task {ti.task_id!r}: processes {sorted(left)} did not end after "
                          "SIGKILL; nothing was changed")


def _kill_orphan(conn, run: Run, ti: TaskInstance) -> None:
    conn.execute("UPDATE tries SET state = 'failed', end_date = ?, reason = ? WHERE run_pk = ? "
                 "AND task_id = ? AND try_number = ? AND end_date IS NULL",
                 (time.time(), "killed by an operator while no runner owned it", run.pk,
                  ti.task_id, ti.try_number))


def trigger(store: Store, dag: DagSpec, *, logical_date: float | None, conf: dict,
            user: str | None = None) -> Run:
    """Queue a manual run for the runner (audited) and wake the daemon; the CLI and TUI's
    trigger. Its tasks say why they wait when the DAG is paused or no runner lives."""
    from flowtui.runner.runs import create_manual_run

    run = create_manual_run(store, dag, logical_date=logical_date, conf=conf, state="queued")
    daemon = live_daemon(store)
    paused = store.conn.execute("SELECT paused FROM dags WHERE dag_id = ?",
                                (run.dag_id,)).fetchone()
    reason = ("DAG paused" if paused and paused[0] else
              "" if daemon else "no live runner: start 'flowtui runner' for this home")
    with store.transaction() as conn:
        store.audit(conn, "trigger", dag_id=run.dag_id, run_id=run.run_id, detail={"conf": conf},
                    user=user)
        if reason:
            conn.execute("UPDATE task_instances SET reason = ? WHERE run_pk = ?", (reason, run.pk))
    if daemon is not None:
        wake(daemon[1])
    return run


def set_paused(store: Store, dag_id: str, paused: bool, user: str | None = None) -> None:
    """Pause or unpause a DAG (audited) and let the daemon know at once."""
    if not store.set_paused(dag_id, paused, None, user or current_user()):
        raise ActionError(f"DAG {dag_id!r} is not known to the store yet")
    daemon = live_daemon(store)
    if daemon is not None:
        wake(daemon[1])
