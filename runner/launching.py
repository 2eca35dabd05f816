"""Starting tries: the launch pass over ready tasks, each try's env, script and process, and
watching running tries' logs."""
from __future__ import annotations

import heapq
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flowtui.runner import executor, protocol
from flowtui.runner.clock import iso
from flowtui.runner.templating import render, render_shell
from flowtui.store import TaskState
from flowtui.store.health import StoreUnavailable

if TYPE_CHECKING:
    from flowtui.runner.engine import Engine
    from flowtui.runner.live import LiveRun, LiveTask

S = TaskState
LOG_SCAN_INTERVAL = 1.0
POOL_LOOK = 0.05  # seconds between looks at a pool other hosts hold
FIRST_FOLDERS = 8  # a run's first tasks' folders made by the engine itself (make_log_dirs)
LATE_GATE = 1.0  # seconds after its process's start a try's command starting moves its start
SHIP_CHUNK = 1 << 16  # bytes of log a database row holds
SHIP_LIMIT = 8 << 20  # bytes of one try's log the database keeps; the file has all of it


class Launcher:
    """Turns scheduled tasks into running processes, and watches their logs while they run."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.lifecycle = engine.lifecycle
        self.changes = engine.changes
        self.config = engine.config
        self.base_env = task_base_env(engine.config.raw)
        self.next_scan = 0.0
        self.next_pool_look = 0.0
        self._folders: FolderMaker | None = None

    # -- log folders -----------------------------------------------------------------------
    def make_log_dirs(self, live: LiveRun) -> None:
        """Have the run's log folders made ahead of the tasks that need them, by a process of
        their own (FolderMaker): creating a folder and its files costs up to a millisecond each
        on a busy disk, and done there it overlaps with tasks running instead of adding to every
        launch. A launch that finds its folder not made yet makes it."""
        if self._folders is None:
            self._folders = FolderMaker()
        order = live.dag.topological_order()
        # The run's first tasks start at once, before the maker could have made their folders
        # (a launch that finds none pays a failed spawn first: a year's backfill paid one a
        # run): a few of those are made here.
        here = 0
        while here < min(len(order), FIRST_FOLDERS) and not live.dag.tasks[order[here]].deps:
            try:
                os.makedirs(os.path.join(live.log_base, order[here]), exist_ok=True)
            except OSError:
                break  # the launch says why
            here += 1
        self._folders.make([os.path.join(live.log_base, t) for t in order[here:]])

    def close(self) -> None:
        """End the folder maker: what it has not made yet, no launch of this engine needs."""
        if self._folders is not None:
            self._folders.close()
            self._folders = None

    # -- windows ---------------------------------------------------------------------------
    def outside_window(self, task: LiveTask, now: float) -> bool:
        """Hold a task outside its daily window: state scheduled, a timer at the opening."""
        opens = window_opens(task.spec.window or "", task.run.dag.timezone, now)
        if opens is None:
            return False
        opens_local = (iso(opens, task.run.dag.timezone) or "")[11:16]
        reason = f"outside its window {task.spec.window} (opens at {opens_local})"
        if task.state != S.SCHEDULED:
            self.lifecycle.move(task, S.SCHEDULED, "scheduler", reason, now, end_date=None,
                                next_try_at=task.next_try_at)
        else:
            self.lifecycle.set_reason(task, reason, now)
        self.engine.call_at(opens, lambda at, t=task: self.lifecycle.schedule(t, at)
                            if t.state == S.SCHEDULED else None)
        return True

    # -- the launch pass -------------------------------------------------------------------
    def launch_ready(self, now: float) -> None:
        engine = self.engine
        ready = self.lifecycle.ready
        if not ready or engine.stopping:
            return
        if engine.ships_logs and any(entry[4].pool != "default" for entry in ready):
            # Several hosts share named pools: one runner at a time decides its launches from
            # what every host holds, and commits them before the next one looks.
            with engine.store.launch_lock():
                engine.slots.elsewhere = {  # the default pool is each runner's own
                    pool: max(0, used - engine.slots.pool_used.get(pool, 0))
                    for pool, used in engine.store.views.pool_slots_used().items()
                    if pool != "default"}
                now = engine.now()  # the tries start now, after the wait for the lock
                self._launch_ready(now)
            if any(engine.slots.elsewhere.get(entry[4].pool) for entry in ready) and \
                    now >= self.next_pool_look:
                # A slot another host frees wakes nobody here: look again shortly.
                self.next_pool_look = now + POOL_LOOK
                engine.call_at(self.next_pool_look, lambda at: None)
            return
        self._launch_ready(now)

    def _launch_ready(self, now: float) -> None:
        engine = self.engine
        ready = self.lifecycle.ready
        slots = engine.slots
        offers = engine.remote.enabled  # SPEC 10: what cannot start here, another runner may
        blocked: list[tuple[int, int, int, int, LiveTask]] = []
        launching: list[LiveTask] = []
        taken: set[int] = set()  # a task's state moves once its process exists
        while ready:
            entry = heapq.heappop(ready)
            task = entry[4]
            if task.state != S.SCHEDULED or task.run.timed_out or task.run.superseded \
                    or id(task) in taken:
                continue
            if task.spec.window and self.outside_window(task, now):
                continue
            served = engine.serves(task)
            if offers and (not served or slots.full()):
                reason = slots.block_dag(task)
                if reason is None:
                    engine.remote.offer(task, now)
                    continue
            elif not served:
                reason = (f"waiting for a runner serving queue {task.spec.queue} "
                          f"('flowtui runner --queues {task.spec.queue}' on a host)")
            else:
                reason = slots.block(task)
            if reason is not None:
                if task.reason != reason:
                    self.lifecycle.set_reason(task, reason, now)
                blocked.append(entry)
                if slots.full() and not offers:
                    break
                continue
            self.prepare(task, now)
            launching.append(task)
            taken.add(id(task))
        for entry in blocked:
            heapq.heappush(ready, entry)
        if not launching:
            return
        # Each process starts gated (executor.launch): it runs nothing of its command until
        # its try, with its pid, is committed, and starting it overlaps the commit.
        for task in launching:
            self.spawn(task, now, gated=True)
        try:
            engine.flush()
        except StoreUnavailable:
            # The tries just launched are queued, not written: their gates open once they are
            # (a command never runs before its try's row is in the database).
            def open_later(at: float, pending: list[LiveTask] = launching) -> None:
                engine.flush()  # while it fails, the engine's hook keeps this for after
                self.open_gates(pending)

            engine.call_at(engine.store.health.retry_at, open_later)
            return
        self.open_gates(launching)

    def open_gates(self, tasks: list[LiveTask]) -> None:
        """The tries of these tasks are committed: their commands run. A try the store refused
        (the run is another runner's now) never runs: its gate closes unopened."""
        now = self.engine.now()
        for task in tasks:
            gate, task.gate = task.gate, None
            if gate is None:
                continue
            if task.run.superseded:
                os.close(gate)
            else:
                executor.open_gate(gate)
                self.started(task, now)

    def started(self, task: LiveTask, now: float) -> None:
        """The try's command runs from now: its execution timeout and its silence count from
        here, not from its process's start (a gate held through a database outage; then the
        try's recorded start moves too, for a runner that adopts it to count from)."""
        if now - task.started_at > LATE_GATE:
            task.started_at = now
            self.changes.try_command_started(task.run.pk, task.task_id, task.try_number, now)
        if task.watch is not None:
            task.watch.last_activity = now
        if task.spec.execution_timeout:
            self.lifecycle.timeout_at(task, now + task.spec.execution_timeout)

    def prepare(self, task: LiveTask, now: float) -> None:
        """Take the task's slots for its new try (recorded once its process exists)."""
        live = task.run
        task.try_number += 1
        task.log_path = f"{live.log_base}/{task.task_id}/{task.try_number}.log"
        task.exit_path = executor.exit_path_of(live.log_base, task.task_id, task.try_number,
                                               self.engine.runner_id)
        task.kill_reason = None
        task.kill_members = set()
        task.exit_code = None
        task.started_at = now
        task.shipped = task.ship_seq = 0
        self.engine.slots.take(task)

    def record_start(self, task: LiveTask, now: float, pid: int | None,
                     first_poke: bool) -> None:
        """The new try, running, with its process's pid (None: it could not start);
        ``first_poke``: a sensor's first (its timeout counts from it)."""
        fields: dict[str, Any] = {"try_number": task.try_number, "start_date": now,
                                  "end_date": None, "exit_code": None, "pid": pid,
                                  "next_try_at": None}
        if first_poke:
            fields["first_poke_at"] = now
        self.lifecycle.move(task, S.RUNNING, "scheduler", "", now, notify=False, **fields)
        self.changes.try_started(task.run.pk, task.task_id, task.try_number, now, task.log_path,
                                 task.exit_path, self.engine.runner_id, pid)

    def spawn(self, task: LiveTask, now: float, gated: bool = False) -> None:
        """Start the try's process; ``gated``: it waits for ``open_gates`` (its try is not
        committed yet)."""
        engine = self.engine
        if self._folders is not None:
            self._folders.feed()
        first_poke = gated and task.spec.sensor is not None and task.first_poke_at is None
        if first_poke:
            task.first_poke_at = now  # a sensor's timeout counts from its first poke
        try:
            context = self._template_context(task)
            env = self._task_env(task, context)
            script = self._script(task, env, context, gated)
            try:
                launched = executor.launch(script, shell=task.spec.shell,
                                           log_path=task.log_path, env=env, gated=gated)
            except FileNotFoundError:  # its folder is not made yet (or the shell is missing)
                os.makedirs(os.path.dirname(task.log_path), exist_ok=True)
                launched = executor.launch(script, shell=task.spec.shell,
                                           log_path=task.log_path, env=env, gated=gated)
        except Exception as exc:  # cannot start (log folder, cwd template, no shell): a failed try
            message = f"could not start the task: {exc}"
            try:
                with open(task.log_path, "a", encoding="utf-8") as fh:
                    fh.write(message + "\n")
            except OSError:
                pass  # the reason is on the try's row either way
            if gated:
                self.record_start(task, now, None, first_poke)
            engine.slots.give_back(task)
            self.lifecycle.end_try(task, 127, message, engine.now())
            return
        task.pid = launched.pid
        task.pidfd = launched.pidfd
        task.gate = launched.gate
        task.pid_start = None
        task.watch = protocol.LogWatch(task.log_path, last_activity=now)
        engine.watch(task, launched.pidfd)
        if gated:  # its try is recorded with its pid, in the commit that opens its gate
            self.record_start(task, now, launched.pid, first_poke)
        else:  # recorded before (a claim): its pid rides with the next commit
            self.changes.try_pid(task.run.pk, task.task_id, task.try_number, launched.pid, now)
            self.started(task, now)
        if self.next_scan <= now:
            self.next_scan = now + LOG_SCAN_INTERVAL
        engine.notify(task.run, task, "running", "")

    # -- watching running tries ------------------------------------------------------------
    def scan(self, now: float) -> None:
        """Read what running tries wrote: progress lines, heartbeats, a hung task."""
        for task in list(self.engine.running.values()):
            watch = task.watch
            if watch is None:
                continue
            alive = protocol.scan(watch, now)
            limit = task.spec.heartbeat_timeout
            if limit and not alive and task.kill_reason is None and task.gate is None \
                    and now - watch.last_activity >= limit:
                self.lifecycle.kill(task, "hung", now)
            if task.pid_start is None and task.pid is not None:
                # Read here, not at launch: /proc/PID/stat of a new process is slow to read, and
                # a task that ends within a second never needs adopting by its start time.
                task.pid_start = executor.process_start_time(task.pid)
                self.changes.try_pid_start(task.run.pk, task.task_id, task.try_number,
                                           task.pid_start)
            if watch.changed:
                watch.changed = False
                self.changes.try_progress(task.run.pk, task.task_id, task.try_number,
                                          watch.progress, watch.metadata)
                self.engine.notify(task.run, task, "progress", "")
            if self.engine.ships_logs:
                ship_log(self.changes, task, now)
        self.next_scan = now + LOG_SCAN_INTERVAL

    def sample(self, now: float) -> None:
        """CPU and memory of each running task's process, for the TUI's task detail. A task
        younger than a second is left for the next heartbeat: most end before it (and a
        foreground run of short tasks never loads psutil)."""
        tasks = [t for t in self.engine.running.values() if now - t.started_at >= 1.0]
        if not tasks:
            return
        import psutil

        for task in tasks:
            try:
                if task.proc is None:
                    task.proc = psutil.Process(task.pid)
                    task.proc.cpu_percent(None)  # the first call only sets the baseline
                    continue
                cpu = task.proc.cpu_percent(None)
                rss = task.proc.memory_info().rss
            except (psutil.Error, OSError):
                continue
            self.changes.try_sample(task.run.pk, task.task_id, task.try_number, cpu, rss)

    def _template_context(self, task: LiveTask) -> dict[str, Any]:
        context = dict(task.run.base_context)
        context["task_id"] = task.task_id
        context["try_number"] = str(task.try_number)
        return context

    def _task_env(self, task: LiveTask, context: dict[str, Any]) -> dict[str, str]:
        live = task.run
        env = dict(self.base_env)
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
            "FLOWTUI_PARAMS": live.params_json,
            "FLOWTUI_DAG_FILE": live.dag.fileloc,
            "FLOWTUI_SKIP_EXIT_CODE": str(task.spec.skip_exit_code or 99),
            executor.MARK_VAR: task.exit_path,
        })
        return env

    def _script(self, task: LiveTask, env: dict[str, str], context: dict[str, Any],
                gated: bool) -> str:
        spec = task.spec
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
            env["FLOWTUI_FIRST_POKE_AT"] = repr(task.first_poke_at or self.engine.now())
            env["FLOWTUI_HOME"] = str(self.config.home)
            env["FLOWTUI_LOGICAL_TS"] = repr(task.run.logical_date)
            command = f"{shlex.quote(sys.executable)} -P -m flowtui.runner.sensor"
        elif spec.python_callable is not None:
            # -P: the task's working folder must not shadow the installed flowtui package.
            command = f"{shlex.quote(sys.executable)} -P -m flowtui.runner.pytask"
        else:
            command, values = render_shell(spec.command or "", context)
            env.update(values)
        return executor.build_script(command, task.exit_path, cwd, gated)


# The folder maker's program: folders (NUL-separated on stdin) made in the order given, each
# with its first try's log file, empty (a log is only ever read through its try): the spawn
# then opens the log without creating it. Never truncated: a try may have written it already.
# Ends at the end of its input: when its engine closes it, or dies.
_FOLDER_MAKER = """
import os, sys
rest = b""
while chunk := sys.stdin.buffer.read1(1 << 16):
    *paths, rest = (rest + chunk).split(b"\\0")
    for path in paths:
        try:
            os.makedirs(path, exist_ok=True)
            os.close(os.open(os.path.join(path, b"1.log"), os.O_WRONLY | os.O_CREAT, 0o644))
        except OSError:
            pass  # the launch makes it, or says why it cannot
"""


class FolderMaker:
    """Makes log folders ahead of the launches that need them, in a process of its own.

    A thread of the engine's did this before: beside a chain of short tasks it held the
    interpreter's lock between its file system calls often enough to slow every launch by a
    third. Handing it folder names through a pipe costs the engine one write a run. Nothing
    waits for it: a launch whose folder is not there yet makes it itself.
    """

    PIPE_SIZE = 1 << 20  # a 10,000-task run's folder names fit at once

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._pending = b""
        try:
            self._proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _FOLDER_MAKER],
                                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)
        except OSError:
            return  # launches make their folders
        assert self._proc.stdin is not None
        self._fd = self._proc.stdin.fileno()
        os.set_blocking(self._fd, False)
        try:
            import fcntl

            fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, self.PIPE_SIZE)
        except OSError:
            pass  # the default size: what does not fit waits for the next call

    def make(self, paths: list[str]) -> None:
        if self._proc is None:
            return
        self._pending += b"".join(os.fsencode(p) + b"\0" for p in paths)
        try:
            written = os.write(self._fd, self._pending)
        except BlockingIOError:
            written = 0
        except OSError:  # it died: launches make their folders
            self.close()
            return
        self._pending = self._pending[written:]

    def feed(self) -> None:
        """Hand it what did not fit in the pipe last time."""
        if self._pending and self._proc is not None:
            self.make([])

    def close(self) -> None:
        """End it: what it has not made yet, no launch of this engine will need."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
            assert proc.stdin is not None
            try:
                proc.stdin.close()
            except OSError:
                pass


def ship_log(changes: Any, task: LiveTask, now: float) -> None:
    """Send what the try's log gained since the last call to the database, in rows of at
    most SHIP_CHUNK bytes, up to SHIP_LIMIT a try (then one line saying where the rest is)."""
    if task.shipped > SHIP_LIMIT:
        return
    try:
        with open(task.log_path, "rb") as fh:
            fh.seek(task.shipped)
            data = fh.read(SHIP_LIMIT - task.shipped + 1)
    except OSError:
        return
    if task.shipped + len(data) > SHIP_LIMIT:
        data = data[:SHIP_LIMIT - task.shipped] + (
            f"\n[flowtui: the database keeps the first {SHIP_LIMIT >> 20} MiB of this log; the "
            f"whole file is {task.log_path} on the host that ran it]\n").encode()
    for start in range(0, len(data), SHIP_CHUNK):
        changes.log_chunk(task.run.pk, task.task_id, task.try_number, task.ship_seq, now,
                          data[start:start + SHIP_CHUNK])
        task.ship_seq += 1
    task.shipped += len(data)


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


class Holder(Launcher):
    """A launcher that starts nothing: the engine of a process that only applies an operator's
    request to a run no runner owns, then leaves it to the next runner."""

    def launch_ready(self, now: float) -> None:
        pass

    def make_log_dirs(self, live: LiveRun) -> None:
        pass
