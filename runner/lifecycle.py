"""The life of tasks and runs in the engine: deciding, scheduling, ending tries, retries,
finishing runs and kills. Every state change goes through ``move`` (tasks) or ``finish``
(runs), which write it through the store's transition functions."""
from __future__ import annotations

import heapq
import json
import itertools
import os
from typing import TYPE_CHECKING

from flowtui.runner import executor, protocol
from flowtui.runner.adoption import start_afresh
from flowtui.runner.clock import local_hms
from flowtui.runner.endings import CAUSES, UNCOUNTED, outcome, retry_delay
from flowtui.runner.launching import ship_log
from flowtui.runner.live import LiveRun, LiveTask, run_context
from flowtui.runner.model import DagSpec
from flowtui.runner.trigger_rules import RUN, SKIPPED, UPSTREAM_FAILED, Counts, evaluate, waiting_reason
from flowtui.store import TERMINAL, RunState, TaskState
from flowtui.store.models import Run

if TYPE_CHECKING:
    from flowtui.runner.engine import Engine

S = TaskState
_TRY_STATE = {S.SUCCESS: "success", S.SKIPPED: "skipped", S.UP_FOR_RESCHEDULE: "rescheduled"}


class Lifecycle:
    """The engine's task and run state machine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.changes = engine.changes
        self.ready: list[tuple[int, int, int, int, LiveTask]] = []
        self._ready_seq = itertools.count()
        self._run_seq = itertools.count()

    # -- runs ------------------------------------------------------------------------------
    def new_live_run(self, dag: DagSpec, run: Run, now: float) -> LiveRun:
        """A run in memory, every task as the DAG defines it (state ``none``)."""
        engine = self.engine
        live = LiveRun(pk=run.pk, dag=dag, run_id=run.run_id, run_type=run.run_type,
                       logical_date=run.logical_date,
                       data_interval_start=run.data_interval_start,
                       data_interval_end=run.data_interval_end, conf=run.conf,
                       seq=next(self._run_seq), started_at=run.start_date or now,
                       backfill_id=run.backfill_id, partition=run.partition)
        live.base_context = run_context(dag, live)
        live.params_json = json.dumps(live.base_context["params"])
        live.log_base = os.path.join(str(engine.config.logs_dir), dag.dag_id, run.run_id)
        order = {t: i for i, t in enumerate(dag.topological_order())}
        for task_id, spec in dag.tasks.items():
            live.tasks[task_id] = LiveTask(spec=spec, run=live, order=order[task_id],
                                           priority=dag.priority[task_id],
                                           max_tries=spec.max_tries,
                                           counts=Counts(len(spec.deps)))
        live.unfinished = len(live.tasks)
        return live

    def start(self, dag: DagSpec, run: Run, now: float) -> LiveRun:
        """A run just created: it is running from now, and what is ready starts."""
        live = self.new_live_run(dag, run, now)
        if run.state != RunState.RUNNING:
            self.move_run(live, RunState(run.state), RunState.RUNNING, now, "scheduler",
                          runner_id=self.engine.runner_id, first_start=now)
            live.started_at = now
        self.take(live)
        for task in sorted(live.tasks.values(), key=lambda t: t.order):
            self.evaluate(task, now)
        return live

    def take(self, live: LiveRun) -> None:
        """The engine owns this run from now: its log folders, its dagrun_timeout."""
        engine = self.engine
        engine.runs[live.pk] = live
        engine.launcher.make_log_dirs(live)
        if live.dag.dagrun_timeout:
            engine.call_at(live.started_at + live.dag.dagrun_timeout,
                           lambda now, lv=live: self.dagrun_timeout(lv, now))

    def move_run(self, live: LiveRun, old: RunState, new: RunState, now: float, cause: str,
                 actor: str | None = None, detail: str = "", **fields: object) -> None:
        live.state = new
        self.changes.move_run(live.pk, live.dag.dag_id, live.run_id, old, new, at=now,
                              cause=cause, actor=actor or self.engine.actor, detail=detail,
                              **fields)

    def finish(self, live: LiveRun, now: float, interrupted: bool = False) -> None:
        if live.state != RunState.RUNNING:
            return
        engine = self.engine
        leaves = [live.tasks[t] for t in live.dag.leaves()]
        failed = interrupted or live.timed_out or any(
            t.state not in (S.SUCCESS, S.SKIPPED) for t in leaves)
        new = RunState.FAILED if failed else RunState.SUCCESS
        cause = ("signal" if interrupted else "operator" if live.cancelled
                 else "dagrun_timeout" if live.timed_out else "scheduler")
        self.move_run(live, RunState.RUNNING, new, now, cause, end_date=now)
        engine.runs.pop(live.pk, None)
        engine.notify(live, None, new.value, cause)
        if engine.on_run_finished is not None:
            engine.hook(engine.on_run_finished, live)

    def dagrun_timeout(self, live: LiveRun, now: float) -> None:
        if live.state != RunState.RUNNING or live.superseded or live.pk not in self.engine.runs:
            return  # over, or let go of (a timer of this copy; a copy taken back has its own)
        live.timed_out = True
        for task in live.tasks.values():
            self.engine.remote.settle(task, now)  # an offer is taken back, or it runs now
            if task.state == S.RUNNING:
                self.kill(task, "dagrun_timeout", now)
            elif task.state not in TERMINAL:
                self.move(task, S.SKIPPED, "dagrun_timeout",
                          "dagrun_timeout exceeded before the task started", now, end_date=now)
                live.unfinished -= 1
        if live.unfinished == 0:
            self.finish(live, now)

    def stop_everything(self, now: float, force: bool) -> None:
        """A foreground run asked to stop: its processes end, nothing new starts."""
        for task in list(self.engine.running.values()):
            if force:
                executor.kill_tree(task.pid, task.exit_path, task.kill_members)
            elif task.kill_reason is None:
                self.kill(task, "signal", now)
        for live in list(self.engine.runs.values()):
            for task in live.tasks.values():
                if task.state in (S.NONE, S.SCHEDULED, S.UP_FOR_RETRY):
                    self.set_reason(task, "run interrupted: the runner was asked to stop", now)
            if not any(t.state == S.RUNNING for t in live.tasks.values()):
                self.finish(live, now, interrupted=True)

    # -- tasks -----------------------------------------------------------------------------
    def move(self, task: LiveTask, new: TaskState, cause: str, reason: str, now: float, *,
             actor: str | None = None, operator: bool = False, notify: bool = True,
             detail: str | None = None, **fields: object) -> None:
        """The one way a task's state changes: checked, written with its event, announced."""
        old = task.recorded
        live = task.run
        self.changes.move_task(live.pk, live.dag.dag_id, live.run_id, task.task_id, old, new,
                               at=now, cause=cause, actor=actor or self.engine.actor,
                               reason=reason, attempt=task.try_number, operator=operator,
                               detail=detail, **fields)
        task.state = task.recorded = new
        task.reason = reason
        if notify:
            self.engine.notify(live, task, new.value, reason)

    def set_reason(self, task: LiveTask, reason: str, now: float) -> None:
        if task.reason == reason:
            return
        task.reason = reason
        self.changes.task_reason(task.run.pk, task.task_id, reason, now)

    def evaluate(self, task: LiveTask, now: float) -> None:
        """Decide a ``none`` task: start it, end it without running, or say what it waits for."""
        if task.state != S.NONE:
            return
        live = task.run
        if live.timed_out or self.engine.stopping:
            return
        decision = evaluate(task.spec.trigger_rule, task.counts)
        if decision == RUN:
            self.schedule(task, now)
        elif decision in (UPSTREAM_FAILED, SKIPPED):
            new = S.UPSTREAM_FAILED if decision == UPSTREAM_FAILED else S.SKIPPED
            why = (f"trigger rule {task.spec.trigger_rule} can no longer be met "
                   f"({task.counts.describe()})")
            self.move(task, new, "scheduler", why, now, end_date=now, next_try_at=None)
            self.task_done(task, now)
        else:
            pending = [d for d in task.spec.deps if live.tasks[d].state not in TERMINAL]
            self.set_reason(task, waiting_reason(task.spec.trigger_rule, task.counts, pending),
                            now)

    def schedule(self, task: LiveTask, now: float) -> None:
        """Mark a task ready; it starts in this turn's launch pass if a slot is free."""
        if task.run.superseded:
            return  # a timer of a run let go of: its new owner decides (this copy is stale)
        launcher = self.engine.launcher
        if task.spec.window and launcher.outside_window(task, now):
            return
        if task.state != S.SCHEDULED:
            blocked = self.engine.slots.block(task)
            if blocked:
                self.move(task, S.SCHEDULED, "scheduler", blocked, now, end_date=None,
                          next_try_at=task.next_try_at)
            else:  # it starts within this turn: its running state is what gets written
                task.state = S.SCHEDULED
                task.reason = ""
        heapq.heappush(self.ready, (-task.priority, task.run.seq, task.order,
                                    next(self._ready_seq), task))

    def task_done(self, task: LiveTask, now: float) -> None:
        """A task reached a terminal state: update its downstream, maybe finish the run."""
        live = task.run
        live.unfinished -= 1
        state = task.state
        for child_id in live.dag.downstream[task.task_id]:
            child = live.tasks[child_id]
            child.counts.add(state.value)
            self.evaluate(child, now)
        if live.unfinished == 0 and live.state == RunState.RUNNING:
            self.finish(live, now)

    def recount(self, live: LiveRun, now: float) -> None:
        """Recompute upstream tallies after tasks moved out of order (an operator's clear or
        mark, an adoption), then decide again."""
        for task in live.tasks.values():
            task.counts = Counts(len(task.spec.deps))
        for task in live.tasks.values():
            if task.state in TERMINAL:
                for child in live.dag.downstream[task.task_id]:
                    live.tasks[child].counts.add(task.state.value)
        live.unfinished = sum(1 for t in live.tasks.values()
                              if t.state not in TERMINAL or t.override is not None)

    # -- ends of tries ---------------------------------------------------------------------
    def reap(self, task: LiveTask, now: float) -> None:
        engine = self.engine
        pid = task.pid
        if pid is None:
            return
        try:
            reaped, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            reaped, status = pid, None
        if reaped == 0:
            return  # not ended yet
        engine.unwatch(task)
        engine.slots.give_back(task)
        if task.gate is not None:  # killed before its try was committed: nothing of it ran
            os.close(task.gate)
            task.gate = None
        if task.run.superseded:  # killed here; its try is the new owner's to decide
            task.pid = None
            return
        code = os.waitstatus_to_exitcode(status) if status is not None else None
        kill_reason = task.kill_reason
        if code is None:  # not our child (adopted): its shell wrote the status, or nothing did
            code = executor.read_exit_status(task.exit_path)
            if code is None and kill_reason is None:
                if executor.never_started(task.exit_path, task.log_path):
                    # Adopted before it read that its gate would never open: it ran nothing.
                    task.pid = None
                    self.changes.try_forgotten(task.run.pk, task.task_id, task.try_number)
                    start_afresh(engine, task, now)
                    return
                kill_reason = "zombie"
        task.pid = None
        if task.kill_reason:  # whatever is left of the tree gets SIGKILL after the grace
            survivors = executor.survivors(pid, task.exit_path, task.kill_members)
            if survivors:
                self._sigkill_later(pid, task.exit_path, survivors, now + task.spec.kill_grace)
        self.end_try(task, code, kill_reason, now)

    def end_try(self, task: LiveTask, code: int | None, kill_reason: str | None,
                now: float) -> None:
        engine = self.engine
        live = task.run
        if live.foreign:  # run here for another runner's run: that runner decides (SPEC 10)
            engine.remote.exited(task, code, kill_reason, now)
            return
        spec = task.spec
        remote, task.remote_result = task.remote_result, None  # a try another runner ran
        if engine.ships_logs and remote is None:  # the log's last bytes go with the try's end
            ship_log(self.changes, task, now)
        watch = task.watch
        if watch is not None:
            protocol.finish(watch, now)
            progress, metadata = watch.progress, watch.metadata
        else:
            progress, metadata = remote if remote is not None else (None, {})
        task.exit_code = code
        task.proc = None
        new, reason, retry_allowed = outcome(spec, code, kill_reason)
        cause = CAUSES.get(kill_reason or "", "operator" if kill_reason else "scheduler")
        actor = engine.actor
        if task.override is not None:
            new, reason, actor = task.override
            cause = "operator"
            task.override = None
            retry_allowed = False
        elif new == S.FAILED:
            if kill_reason in UNCOUNTED and not engine.stopping and not live.timed_out:
                task.max_tries += 1  # cut short by its runner's stop: tried again, uncounted
            if retry_allowed and task.try_number < task.max_tries and not engine.stopping \
                    and not live.timed_out:
                new = S.UP_FOR_RETRY
        pid = self.changes.pending_pid(live.pk, task.task_id, task.try_number)
        self.changes.try_ended(live.pk, task.task_id, task.try_number,
                               _TRY_STATE.get(new, "failed"), now, code, reason,
                               progress, metadata, pid=pid)
        next_try_at = None
        ti_reason = reason
        if new == S.UP_FOR_RETRY:
            next_try_at = now + (0.0 if kill_reason in UNCOUNTED else
                                 retry_delay(spec, task.try_number))
            ti_reason = (f"{reason}; retry at {local_hms(next_try_at)} "
                         f"(try {task.try_number + 1} of {task.max_tries})")
        elif new == S.UP_FOR_RESCHEDULE:
            next_try_at = now + spec.poke_interval
            task.max_tries += 1  # a reschedule is not a failure: it uses up no retry
            ti_reason = f"condition not met yet; next poke at {local_hms(next_try_at)}"
        task.next_try_at = next_try_at
        task.watch = None
        fields: dict[str, object] = {"end_date": now, "exit_code": code,
                                     "next_try_at": next_try_at}
        if pid is not None:
            fields["pid"] = pid[0]
        if new == S.UP_FOR_RESCHEDULE or kill_reason in UNCOUNTED:
            fields["max_tries"] = task.max_tries
        self.move(task, new, cause, ti_reason, now, actor=actor, operator=cause == "operator",
                  detail=reason, **fields)
        if new == S.SUCCESS and spec.outlets:  # SPEC 9: in the success's own transaction
            for dataset in spec.outlets:
                self.changes.dataset_event(
                    dataset, live.base_context["partition"], now, source="task", dag_id=live.dag.dag_id,
                    run_id=live.run_id, task_id=task.task_id, try_number=task.try_number,
                    actor=actor, metadata=metadata, run_pk=live.pk)
            engine.datasets_written = True
        if engine.on_task_end is not None:
            engine.hook(engine.on_task_end, task, new, kill_reason)
        if new in (S.UP_FOR_RETRY, S.UP_FOR_RESCHEDULE):
            engine.call_at(next_try_at, lambda at, t=task, n=task.try_number, s=new:  # type: ignore[arg-type]
                           self._due_again(t, n, s, at))
        elif new == S.NONE:
            self.evaluate(task, now)  # cleared while it ran: decided again like a new task
        else:
            self.task_done(task, now)
        if engine.stopping and not engine.serving and live.state == RunState.RUNNING and not any(
                t.state == S.RUNNING for t in live.tasks.values()):
            self.finish(live, now, interrupted=True)

    def _due_again(self, task: LiveTask, try_number: int, waiting: TaskState,
                   now: float) -> None:
        """A retry or a sensor's next poke is due (unless the task moved on meanwhile)."""
        if task.state == waiting and task.try_number == try_number:
            self.schedule(task, now)

    def due_at(self, task: LiveTask, at: float) -> None:
        """Arm the retry or next poke of a task that waits (an adopted one)."""
        self.engine.call_at(at, lambda now, t=task, n=task.try_number, s=task.state:
                            self._due_again(t, n, s, now))

    # -- kills -----------------------------------------------------------------------------
    def kill(self, task: LiveTask, reason: str, now: float) -> None:
        """SIGTERM to the task's tree now, SIGKILL to what is left after its kill_grace (a
        try running on another runner: that runner is asked to)."""
        if task.pid is None:
            if task.remote is not None:
                self.engine.remote.stop_try(task, reason)
            return
        task.kill_reason = reason
        task.kill_members = executor.terminate_tree(task.pid, task.exit_path)
        try_number = task.try_number

        def sigkill(at: float) -> None:
            if task.pid is not None and task.try_number == try_number:
                executor.kill_tree(task.pid, task.exit_path, task.kill_members)

        self.engine.call_at(now + task.spec.kill_grace, sigkill)
        self.engine.track_kill(("task", id(task), try_number),
                               lambda: task.pid is not None and task.try_number == try_number)

    def _sigkill_later(self, pid: int, mark: str, members: set[int], at: float) -> None:
        self.engine.call_at(at, lambda now: executor.kill_tree(pid, mark, members))
        self.engine.track_kill(("orphans", pid, mark),
                               lambda: bool(executor.survivors(pid, mark, members)))

    def timeout_at(self, task: LiveTask, at: float) -> None:
        """Arm the execution_timeout of the task's current try."""
        task.timeout_at = at
        try_number = task.try_number

        def timed_out(now: float) -> None:
            if task.state == S.RUNNING and task.try_number == try_number \
                    and task.kill_reason is None:
                self.kill(task, "timeout", now)

        self.engine.call_at(at, timed_out)
