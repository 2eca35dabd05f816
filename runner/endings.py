"""Ending tries: reaping processes, deciding outcomes and retries, finishing runs, kills."""
from __future__ import annotations

import json
import os
import random
import signal
from typing import TYPE_CHECKING

from flowtui.runner import executor, protocol, sql
from flowtui.runner.clock import local_hms
from flowtui.runner.model import TaskSpec
from flowtui.store import TERMINAL, RunState, TaskState, check_transition

if TYPE_CHECKING:
    from flowtui.runner.engine import LiveRun, LiveTask

S = TaskState
SENSOR_TIMED_OUT = 124  # exit codes of flowtui.runner.sensor
SENSOR_RESCHEDULE = 125
MAX_RETRY_DELAY = 24 * 3600.0  # no retry waits longer than a day, whatever the backoff says
_CAUSES = {"timeout": "timeout", "hung": "hung", "zombie": "zombie", "signal": "signal",
           "dagrun_timeout": "timeout"}



class EndingMixin:
    """The part of ``Engine`` that ends tries and runs."""

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
            code = executor.read_exit_status(task.exit_path)
            if code is None and kill_reason is None:
                kill_reason = "zombie"
        task.pid = None
        if task.kill_reason:  # whatever is left of the tree gets SIGKILL after the grace
            survivors = executor.survivors(pid, task.exit_path, task.kill_members)
            if survivors:
                self._timer(now + task.spec.kill_grace, "sigkill_orphans",
                            (pid, task.exit_path, survivors))
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
        self._ops.append((sql.SQL_TRY_END, (try_state, now, code, reason, progress, metadata,
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
        self._ops.append((sql.SQL_TI_END, (new.value, now, code, ti_reason, next_try_at, now,
                                        live.pk, task.task_id)))
        self._event(task, old, new, cause, reason, now)
        task.watch = None
        self._notify(live, task, new.value, ti_reason)
        if self.on_task_end is not None:
            self._hook(self.on_task_end, task, new, kill_reason)
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
        delay = float(spec.retry_delay)
        if spec.retry_exponential_backoff:
            # Past 2**40 the cap below holds whatever the base delay: no overflow on try 2000.
            delay = delay * (2.0 ** min(try_number - 1, 40))
        if spec.max_retry_delay is not None:
            delay = min(delay, spec.max_retry_delay)
        delay = min(delay, MAX_RETRY_DELAY)
        if spec.retry_jitter:
            delay *= 1 + random.uniform(-spec.retry_jitter, spec.retry_jitter)
        return max(0.0, min(delay, MAX_RETRY_DELAY))

    def _task_done(self, task: LiveTask, now: float) -> None:
        """A task reached a terminal state: update its downstream, maybe finish the run."""
        live = task.run
        live.unfinished -= 1
        state = task.state
        for child_id in live.dag.downstream[task.task_id]:
            child = live.tasks[child_id]
            child.counts.add(state.value)
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
        cause = ("signal" if interrupted else "operator" if live.cancelled
                 else "dagrun_timeout" if live.timed_out else "scheduler")
        self._ops.append((sql.SQL_RUN_STATE, (new.value, now, now, live.pk)))
        self._ops.append((sql.SQL_EVENT, (now, "run", live.dag.dag_id, live.run_id, None, None,
                                       "running", new.value, cause, "")))
        self.runs.pop(live.pk, None)
        prefix = live.log_base + os.sep
        with self._dirs_lock:  # the folder thread adds to this set
            self._dirs_made -= {d for d in self._dirs_made if d.startswith(prefix)}
        self._notify(live, None, new.value, cause)
        if self.on_run_finished is not None:
            self._hook(self.on_run_finished, live)

    def _dagrun_timeout(self, live: LiveRun, now: float) -> None:
        if live.state != RunState.RUNNING or live.pk not in self.runs:
            return
        live.timed_out = True
        for task in live.tasks.values():
            if task.state == S.RUNNING:
                self._kill(task, "dagrun_timeout", now, grace=task.spec.kill_grace)
            elif task.state not in TERMINAL:
                self._set_state(task, S.SKIPPED, "dagrun_timeout",
                                "dagrun_timeout exceeded before the task started", now, end=now)
                live.unfinished -= 1
        if live.unfinished == 0:
            self._finish_run(live, now)

    def _kill(self, task: LiveTask, reason: str, now: float, grace: float) -> None:
        if task.pid is None:
            return
        task.kill_reason = reason
        task.kill_members = executor.terminate_tree(task.pid, task.exit_path)
        self._timer(now + grace, "sigkill", (task, task.try_number))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
