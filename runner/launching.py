"""Starting tries: the launch pass over ready tasks, each try's env, script and process."""
from __future__ import annotations

import heapq
import json
import os
import selectors
import shlex
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flowtui.runner import executor, protocol, sql
from flowtui.runner.clock import iso
from flowtui.runner.templating import render, render_shell
from flowtui.store import TaskState, check_transition

if TYPE_CHECKING:
    from flowtui.runner.engine import LiveTask

S = TaskState
LOG_SCAN_INTERVAL = 1.0


class LaunchMixin:
    """The part of ``Engine`` that turns scheduled tasks into running processes."""

    def _outside_window(self, task: LiveTask, now: float) -> bool:
        """Hold a task outside its daily window: state scheduled, a timer at the opening."""
        opens = window_opens(task.spec.window or "", task.run.dag.timezone, now)
        if opens is None:
            return False
        opens_local = (iso(opens, task.run.dag.timezone) or "")[11:16]
        reason = f"outside its window {task.spec.window} (opens at {opens_local})"
        if task.state != S.SCHEDULED:
            self._set_state(task, S.SCHEDULED, "scheduler", reason, now)
        else:
            self._set_reason(task, reason, now)
        self._timer(opens, "window", task)
        return True

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
        self._ops.append((sql.SQL_TI_START, (task.try_number, now, now, live.pk, task.task_id)))
        self._ops.append((sql.SQL_TRY_INSERT, (live.pk, task.task_id, task.try_number, now,
                                            task.log_path, task.exit_path, self.runner_id)))
        self._event(task, old, S.RUNNING, "scheduler", "", now)

    def _spawn(self, task: LiveTask, now: float) -> None:
        live = task.run
        try:
            log_dir = os.path.dirname(task.log_path)
            if log_dir not in self._dirs_made:
                os.makedirs(log_dir, exist_ok=True)
                with self._dirs_lock:
                    self._dirs_made.add(log_dir)
            env = self._task_env(task)
            script = self._script(task, env)
            launched = executor.launch(script, shell=task.spec.shell, log_path=task.log_path,
                                       env=env)
        except Exception as exc:  # cannot start (log folder, cwd template, no shell): a failed try
            message = f"could not start the task: {exc}"
            try:
                with open(task.log_path, "a", encoding="utf-8") as fh:
                    fh.write(message + "\n")
            except OSError:
                pass  # the reason is on the try's row either way
            self._take_slots(task, -1)
            self._end_try(task, 127, message, self.clock())
            return
        task.pid = launched.pid
        task.pidfd = launched.pidfd
        task.pid_start = None
        task.watch = protocol.LogWatch(task.log_path, last_activity=now)
        self._running[launched.pid] = task
        self.selector.register(launched.pidfd, selectors.EVENT_READ, task)
        self._ops.append((sql.SQL_TRY_PID, (launched.pid, now, live.pk, task.task_id,
                                         task.try_number)))
        self._ops.append((sql.SQL_TI_PID, (launched.pid, live.pk, task.task_id)))
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
            executor.MARK_VAR: task.exit_path,
        })
        return env

    def _script(self, task: LiveTask, env: dict[str, str]) -> str:
        spec = task.spec
        context = self._template_context(task)
        cwd = render(spec.cwd, context) if spec.cwd else None
        if spec.sensor is not None:
            kind, arg = next(iter(spec.sensor.items()))
            if kind == "command":
                arg, values = render_shell(arg, context)
                env.update(values)
            else:
                arg = render(arg, context)
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
            command, values = render_shell(spec.command or "", context)
            env.update(values)
        return executor.build_script(command, task.exit_path, cwd)


def task_base_env(config: Mapping[str, Any]) -> dict[str, str]:
    """The runner's environment as every task inherits it: minus each variable that
    flowtui.toml names as a secret (``env:NAME``), which only the alert sender reads."""
    secrets: set[str] = set()
    stack: list[Any] = [config]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str) and value.startswith("env:"):
            secrets.add(value[4:].strip())
    return {k: v for k, v in os.environ.items() if k not in secrets}



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
