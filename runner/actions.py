"""Operator actions (clear, retry, mark, kill): what each touches, and how it reaches a runner.

The CLI and the TUI both call ``submit``. The action is recorded as a request (with its audit
row, in one transaction) and applied by the one implementation in ``runner/operator.py``: by the
live runner that owns the run (woken with SIGUSR1, it applies it within milliseconds), or, when
none lives, by this process as a short-lived runner that adopts the run, applies the request,
waits for any process it ends (SIGTERM, kill_grace, SIGKILL) and leaves the run queued for the
next runner, starting nothing itself.
"""
from __future__ import annotations

import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from flowtui.runner import executor
from flowtui.runner.clock import SYSTEM, Clock
from flowtui.runner.config import Config, load_config
from flowtui.runner.model import DagSpec
from flowtui.store import Store, TaskState, current_user, host_name
from flowtui.store.changes import Changes
from flowtui.store.models import Request, Run, TaskInstance

ACTIONS = ("clear", "retry", "mark", "kill")
MARKABLE = ("success", "failed", "skipped")
HEARTBEAT_STALE = 60.0  # a runner on another host silent this long is lost (no lease said)
SIGKILL_WAIT = 10.0  # after its kill_grace, how long a killed tree is waited for


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


def live_owner(store: Store, runner_id: int | None,
               clock: Clock = SYSTEM) -> tuple[int, int] | None:
    """(runner id, pid) of the runner if it is alive, else None."""
    if runner_id is None:
        return None
    record = store.runner(runner_id)
    if record is None:
        return None
    if record.stopped_at is not None:
        # A runner on another host stopped on purpose leaves its tasks running for the next
        # runner there (a restart): for its lease its runs stay its own, or another host would
        # fail those tasks as a lost host's and run them again beside themselves (SPEC 10).
        if store.kind == "postgresql" and record.hostname != host_name() and \
                clock.now() - record.stopped_at < (record.lease or HEARTBEAT_STALE) and \
                store.offers.open_tries(runner_id):
            return runner_id, record.pid
        return None
    if store.kind == "sqlite" or record.hostname == host_name():  # a SQLite file is local
        return (runner_id, record.pid) if executor.same_process(record.pid, record.pid_start) \
            else None
    lease = record.lease or HEARTBEAT_STALE  # judged by the lease it declared
    return (runner_id, record.pid) if clock.now() - record.heartbeat_at < lease \
        else None


def claim(store: Store, run: Run, runner_id: int, cap: tuple[str, int] | None = None,
          backfill_cap: tuple[int, int] | None = None) -> bool:
    """Take a run for this runner: not when another live runner owns it, nor when another took
    it since it was read (several runners on one database race for the same queued run); with
    ``cap``, not when the DAG already has that many runs active on any host."""
    if run.runner_id not in (None, runner_id) and live_owner(store, run.runner_id) is not None:
        return False
    return store.claim_run(run.pk, run.runner_id, runner_id, cap, backfill_cap)


def live_daemon(store: Store) -> tuple[int, int] | None:
    daemons = store.newest_daemon()
    return live_owner(store, daemons[0].id) if daemons else None


def wake(store: Store, owner: tuple[int, int] | None) -> None:
    """Have a runner look at the store now: on PostgreSQL a NOTIFY that every runner listens
    for, on whatever host (a pid on another host names some other process here); on SQLite,
    whose runner is on this host, a signal."""
    if store.kind != "sqlite":
        store.notify_runners()  # every runner listens, this host's too
        return
    if owner is not None:
        try:
            os.kill(owner[1], signal.SIGUSR1)
        except (ProcessLookupError, PermissionError):
            pass


def submit(store: Store, dag: DagSpec, run: Run, action: str, task_ids: list[str], *,
           options: dict | None = None, user: str | None = None, wait: float = 5.0,
           config: Config | None = None, clock: Clock = SYSTEM) -> Outcome:
    """Record an operator action and have it applied: by the runner that owns the run, or by
    this process when none lives."""
    options = dict(options or {})
    user = user or current_user()
    tis = {t.task_id: t for t in store.task_instances(run.pk)}
    affected = _check(dag, tis, action, task_ids, options)
    owner = live_owner(store, run.runner_id, clock) or live_daemon(store)
    with store.transaction() as conn:
        store.audit(conn, action, dag_id=run.dag_id, run_id=run.run_id,
                    task_id=",".join(affected), detail={**options, "tasks": affected}, user=user)
        request_id = store.add_request(conn, user, action, run.pk, affected, options)
    request = Request(request_id, user, action, run.pk, affected, options)
    if owner is None:
        if config is None:  # the home of a SQLite store is the folder it is in
            config = load_config(Path(store.path).parent)
        result = apply_here(store, config, dag, run, request, clock)
        return Outcome(action, run, affected, "store", result)
    wake(store, owner)
    deadline = clock.now() + wait
    pause = 0.002
    while clock.now() < deadline:
        result = store.request_result(request_id)
        if result is not None:
            return Outcome(action, run, affected, f"runner {owner[0]}", result)
        clock.sleep(pause)
        pause = min(pause * 2, 0.05)  # most requests are applied within milliseconds
    return Outcome(action, run, affected, f"runner {owner[0]}",
                   "queued; the runner has not confirmed it yet")


def apply_here(store: Store, config: Config, dag: DagSpec, run: Run, request: Request,
               clock: Clock = SYSTEM) -> str:
    """Apply a request with no runner alive: this process owns the run while it does (so a
    runner starting meanwhile leaves it alone), ends the processes the request ends, and
    leaves the run to the next runner (queued) unless every task is settled."""
    from flowtui.runner.engine import Engine
    from flowtui.runner.launching import Holder

    runner_id = store.register_runner("run", executor.process_start_time(os.getpid()))
    engine = Engine(store, config, runner_id, clock=clock, launcher=Holder)
    try:
        if not store.claim_run(run.pk, run.runner_id, runner_id):
            raise ActionError("a runner took this run just now; run the command again")
        live = engine.adopt_run(dag, run, settle=False)
        result = engine.apply(request, live)
        grace = max((dag.tasks[t].kill_grace for t in request.task_ids if t in dag.tasks),
                    default=0.0)
        if not engine.run_until_settled(grace + SIGKILL_WAIT):
            result += ("; a process did not end after SIGKILL: its task stays running for "
                       "the next runner to watch")
        engine.release()
        engine.flush()
    finally:
        engine.close()
        store.stop_runner(runner_id, checkpoint=False)
    return result


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


def trigger(store: Store, dag: DagSpec, *, logical_date: float | None, conf: dict,
            user: str | None = None) -> Run:
    """Queue a manual run for the runner (audited) and wake the daemon; the CLI and TUI's
    trigger. Its tasks say why they wait when the DAG is paused or no runner lives."""
    from flowtui.runner.runs import create_manual_run

    daemon = live_daemon(store)
    paused = store.is_paused(dag.dag_id)
    run = create_manual_run(store, dag, logical_date=logical_date, conf=conf, state="queued")
    if daemon is not None:
        wake(store, daemon)  # first: the audit entry need not hold the run back
    reason = ("DAG paused" if paused else
              "" if daemon else "no live runner: start 'flowtui runner' for this home")
    changes = Changes()
    if reason:
        changes.run_reason(run.pk, reason)
    with store.transaction() as conn:
        store.audit(conn, "trigger", dag_id=run.dag_id, run_id=run.run_id, detail={"conf": conf},
                    user=user)
        store.write(conn, changes)
    return run


def set_paused(store: Store, dag_id: str, paused: bool, user: str | None = None) -> None:
    """Pause or unpause a DAG (audited) and let the daemon know at once."""
    if not store.set_paused(dag_id, paused, None, user or current_user()):
        raise ActionError(f"DAG {dag_id!r} is not known to the store yet")
    daemon = live_daemon(store)
    if daemon is not None:
        wake(store, daemon)
