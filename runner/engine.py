"""The engine: executes DAG runs as subprocesses, reacting to each exit at once.

One ``selectors`` loop waits on a pidfd per running task, a wake-up pipe (signals, stop
requests) and the nearest timer (retry, timeout, kill grace, heartbeat). Every change is queued
in one ``Changes`` and committed in one transaction per loop turn; a try's row is committed
before its process is spawned, so a crash can never leave a process the store does not know.

Public API: ``start_run`` (a run just created), ``adopt_run`` (a run recorded in the store),
``apply`` (an operator request), ``request_stop``; the loops ``run_until_done`` (a foreground
run: a stop ends its tasks) and ``run_forever`` (the daemon: a stop leaves them to the next
runner); ``call_at`` and the hooks ``on_wake``, ``on_task_end``, ``on_run_finished``.
"""
from __future__ import annotations

import heapq
import itertools
import os
import selectors
import signal
import sys
from collections.abc import Callable
from typing import Any

from flowtui.runner import executor
from flowtui.runner.clock import SYSTEM, Clock
from flowtui.runner.config import Config
from flowtui.runner.launching import Launcher
from flowtui.runner.lifecycle import Lifecycle
from flowtui.runner.live import LiveRun, LiveTask, Slots, run_context
from flowtui.runner.remote import LOOK_INTERVAL, Remote
from flowtui.runner.model import DagSpec
from flowtui.store import TERMINAL, RunState, Store, TaskState
from flowtui.store.changes import TRIES_PAYLOAD, Changes
from flowtui.store.health import StoreUnavailable, outage
from flowtui.store.models import Request, Run

Listener = Callable[[LiveRun, "LiveTask | None", str, str], None]
HEARTBEAT_INTERVAL = 5.0
COALESCE_WINDOW = 0.002

__all__ = ["Engine", "LiveRun", "LiveTask", "Listener", "run_context"]


class Engine:
    """Executes the runs handed to it until they finish (or, serving, until stopped)."""

    def __init__(self, store: Store, config: Config, runner_id: int | None, *,
                 listener: Listener | None = None, clock: Clock = SYSTEM,
                 launcher: type[Launcher] = Launcher) -> None:
        self.store = store
        self.config = config
        # Runners on several hosts ship their tasks' logs to the database (SPEC 10).
        self.ships_logs = store.kind == "postgresql"
        self.runner_id = runner_id
        self.actor = f"runner {runner_id}" if runner_id is not None else "operator"
        self.datasets_written = False  # a dataset event was queued since the owner last looked
        self.listener = listener
        self.clock = clock
        self.runs: dict[int, LiveRun] = {}
        self.selector = selectors.DefaultSelector()
        self.changes = Changes()
        self.slots = Slots(config)
        self.running: dict[int, LiveTask] = {}  # pid -> task
        self._timers: list[tuple[float, int, Callable[[float], None]]] = []
        # Routine wake-ups (a periodic rescan) a clock that skips idle time may jump past.
        self._routine: list[tuple[float, int, Callable[[float], None]]] = []
        self._timer_seq = itertools.count()
        self._run_seq = itertools.count()
        self._kills: dict[object, Callable[[], bool]] = {}  # kill sequences not yet over
        self._stopping = 0
        self._serving = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._next_heartbeat = 0.0
        self.on_run_finished: Callable[[LiveRun], None] | None = None
        self.on_task_end: Callable[[LiveTask, Any, str | None], None] | None = None
        self.on_wake: Callable[[float], None] | None = None
        # SPEC 10, `runner --queues`: the queues whose tasks this runner runs (None: all); a
        # ready task in another queue is offered to the runners that serve it.
        self.queues: frozenset[str] | None = None
        self.lifecycle = Lifecycle(self)
        self.launcher = launcher(self)
        self.remote = Remote(self)
        store.checkpoint_aside()  # no commit of the loop copies the whole log itself

    # -- public ----------------------------------------------------------------------------
    def now(self) -> float:
        return self.clock.now()

    def start_run(self, dag: DagSpec, run: Run) -> LiveRun:
        """Take a run just created (every task ``none``) and start what is ready."""
        return self.lifecycle.start(dag, run, self.now())

    def host_of(self, runner_id: int) -> str | None:
        """The host a runner ran on (None: not recorded)."""
        record = self.store.runner(runner_id)
        return record.hostname if record is not None else None

    def adopt_run(self, dag: DagSpec, run: Run, now: float | None = None, *,
                  settle: bool = True) -> LiveRun:
        """Take over a run recorded in the store (queued, or left by a runner that died) and
        carry on from where it stands."""
        from flowtui.runner.adoption import adopt_run

        return adopt_run(self, dag, run, self.now() if now is None else now, settle=settle)

    def apply(self, request: Request, live: LiveRun, now: float | None = None) -> str:
        """Apply an operator's request to one of this engine's runs; a one-line result."""
        from flowtui.runner.operator import apply_request

        return apply_request(self, live, request, self.now() if now is None else now)

    def flush(self) -> None:
        """Commit what is queued now (``StoreUnavailable`` while the database cannot take it)."""
        self._flush()

    @property
    def stopping(self) -> bool:
        return bool(self._stopping)

    @property
    def serving(self) -> bool:
        """True in the daemon's loop: a stop leaves tasks running for the next runner."""
        return self._serving

    def run_until_done(self) -> None:
        """Loop until every run handed in has finished and no killed tree outlives its grace;
        what they recorded is then in the database."""
        while self.runs or self.kills_pending():
            self.turn()
        self._drain_for_exit()

    def run_forever(self) -> None:
        """The daemon's loop: until ``request_stop``; running tasks are left to the next runner.

        What is queued is written before it returns; while the database cannot take it, it
        waits (a second stop request gives up and leaves it to the next runner's adoption)."""
        self._serving = True
        while not self._stopping:
            self.turn()
        if self.remote.executing:
            self.remote.stop(self.now())
        told = False
        while self.changes:
            try:
                self._flush()
            except StoreUnavailable as exc:
                if self._stopping > 1:
                    self.store.health.report(f"stopping with {len(self.changes)} changes "
                                             f"unwritten ({exc}); the next runner adopts the runs")
                    return
                if not told:
                    told = True
                    self.store.health.report(f"stopping: waiting for the database to take "
                                             f"{len(self.changes)} changes; stop again to leave them")
                self._wait_for_store()

    def idle(self) -> bool:
        """Nothing in flight: no run, no kill sequence, no timer due by now."""
        return not self.runs and not self.kills_pending() and not (
            self._next_at() <= self.now())

    def fire_due(self) -> bool:
        """Run the timers due by now without waiting; True if there were any."""
        due = self._next_at() <= self.now()
        self._fire_timers(self.now())
        return due

    def run_until_settled(self, timeout: float) -> bool:
        """Loop until every process this engine is ending has ended (a short-lived runner
        applying a request); processes it only watches are left running. False when some
        still lived after ``timeout`` seconds (a process stuck in the kernel outlives SIGKILL)."""
        deadline = self.now() + timeout
        while any(t.kill_reason for t in self.running.values()) or self.kills_pending():
            if self.now() >= deadline:
                return False
            self.turn()
        return True

    def release(self) -> None:
        """Leave every run held here to the next runner: unfinished runs go back to queued
        with no owner, and their running tasks keep running."""
        now = self.now()
        for live in list(self.runs.values()):
            self.remote.forget_run(live.pk)
            for task in live.tasks.values():
                if task.pid is not None and not live.foreign:
                    self.unwatch(task)
            self.lifecycle.move_run(live, RunState.RUNNING, RunState.QUEUED, now, "scheduler",
                                    detail="left for the next runner", runner_id=None,
                                    end_date=None)
        self.runs.clear()

    def call_at(self, at: float, callback: Callable[[float], None], *,
                routine: bool = False) -> None:
        """Run ``callback(now)`` from the loop at ``at`` (``routine``: a periodic wake-up that
        a clock skipping idle time may jump past; it then runs once, late)."""
        heapq.heappush(self._routine if routine else self._timers,
                       (at, next(self._timer_seq), callback))

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def heard(self, payload: str) -> None:
        """A notification from the database (another runner, the CLI): one only about tries
        across runners wakes the loop for those alone (``Remote``), any other for everything."""
        try:
            os.write(self._wake_w, b"t" if payload == TRIES_PAYLOAD else b"x")
        except BlockingIOError:
            pass

    def request_stop(self) -> None:
        """First call: stop (a foreground run ends its tasks); second: SIGKILL them now."""
        self._stopping += 1
        self.wake()

    def install_signal_handlers(self) -> None:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.request_stop())
        signal.signal(signal.SIGUSR1, lambda *_: None)  # operator requests wake the loop

    def close(self) -> None:
        self.launcher.close()
        self.store.checkpoint_inline()
        self.selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # -- what collaborators (launcher, lifecycle, adoption, operator) share ----------------
    def watch(self, task: LiveTask, pidfd: int) -> None:
        """Wake the loop when this task's process ends."""
        self.running[task.pid] = task  # type: ignore[index]
        self.selector.register(pidfd, selectors.EVENT_READ, task)

    def watch_fd(self, fd: int, readable: Callable[[float], None]) -> None:
        """Call ``readable(now)`` from the loop whenever ``fd`` has something to read (it must
        read it: the selector is level-triggered)."""
        self.selector.register(fd, selectors.EVENT_READ, readable)

    def unwatch_fd(self, fd: int) -> None:
        try:
            self.selector.unregister(fd)
        except (KeyError, ValueError):
            pass

    def unwatch(self, task: LiveTask) -> None:
        if task.pidfd is not None:
            self.selector.unregister(task.pidfd)
            os.close(task.pidfd)
            task.pidfd = None
        if task.pid is not None:
            self.running.pop(task.pid, None)

    def track_kill(self, key: object, pending: Callable[[], bool]) -> None:
        """A kill sequence whose end ``run_until_done`` waits for (``pending`` says if not)."""
        self._kills[key] = pending

    def kills_pending(self) -> bool:
        for key, pending in list(self._kills.items()):
            if not pending():
                del self._kills[key]
        return bool(self._kills)

    def notify(self, live: LiveRun, task: LiveTask | None, what: str, detail: str) -> None:
        if self.listener is not None:
            self.listener(live, task, what, detail)

    def hook(self, callback: Callable[..., Any], *args: Any) -> None:
        """Call a hook. Serving, a bug or a store error there is logged and the loop (and every
        task it watches) carries on; in a foreground run a bug surfaces as usual. While the
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
                line = health.failed(message, self.now())
                if line:
                    health.report(line)
                if callback is not self.on_wake:
                    health.redo.append(lambda now: callback(*args))
                return
            if not self._serving:
                raise
            import traceback

            print(f"flowtui runner: error in {getattr(callback, '__name__', callback)}; carrying on",
                  file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()

    # -- the loop --------------------------------------------------------------------------
    def turn(self) -> None:
        """One loop turn: start what is ready, commit, wait for an exit, a wake or a timer,
        and react to it."""
        health = self.store.health
        if not health.waiting(self.now()):  # no try is prepared while its row cannot be written
            remote = self.remote
            if remote.follow_due:
                self.hook(remote.before_launch, self.now())
            self.hook(self.launcher.launch_ready, self.now())
            if remote.enabled:
                self.hook(remote.after_launch, self.now())
        events = None
        if self.changes and self.running:
            # What is left to write here (pids of tasks just started) may wait a moment to ride
            # along with the next commit: short tasks end within it, halving commits a task.
            events = self.selector.select(min(COALESCE_WINDOW, self._timeout()))
        if not events:
            try:
                self._flush()
            except StoreUnavailable:
                pass  # kept queued; tasks are still reaped meanwhile, and it is retried below
            if not self._serving and self.idle():
                return
            timeout, skip = self._timeout(), self._timeout(heartbeat=False)
            if health.since is not None and self.changes:
                timeout = skip = min(timeout, max(0.0, health.retry_at - self.now()))
            events = self.clock.select(self.selector, timeout, busy=bool(self.running),
                                       skip=skip)
        now = self.now()
        self._dispatch(events, now)
        self._fire_timers(now)

    def _dispatch(self, events: list, now: float) -> None:
        for key, _ in events:
            data = key.data
            if data is None:
                self._drain_wake(now)
            elif callable(data):  # a file descriptor a collaborator watches (watch_fd)
                self.hook(data, now)
            else:
                self.lifecycle.reap(data, now)

    def _drain_for_exit(self) -> None:
        """A foreground run is over once what it recorded, and what hooks an outage held back
        did, is in the database."""
        while self.changes or self._next_at() <= self.now():
            try:
                self._flush()
            except StoreUnavailable:
                if self._stopping > 1:
                    raise
                self._wait_for_store()
                continue
            self._fire_timers(self.now())  # the hooks redone after an outage
            if self.runs:
                self.run_until_done()  # a redone hook started more work
                return

    def _wait_for_store(self) -> None:
        delay = max(0.0, self.store.health.retry_at - self.now())
        # Whatever is readable is read (a task's end is reaped, a second stop request gives
        # up): a descriptor left readable would have the wait spin until the retry.
        self._dispatch(self.clock.select(self.selector, delay, busy=bool(self.running)),
                       self.now())

    def _timeout(self, heartbeat: bool = True) -> float:
        """Seconds to the next thing the loop must do (without ``heartbeat``: the next thing
        but the runner's heartbeat, which a skipping clock may jump past)."""
        deadline = self._next_heartbeat if heartbeat or not self._timers else float("inf")
        if self._timers:
            deadline = min(deadline, self._timers[0][0])
        if self._routine and (heartbeat or not self._timers):
            deadline = min(deadline, self._routine[0][0])
        if self.running:
            deadline = min(deadline, self.launcher.next_scan)
        if self.remote.enabled:
            deadline = min(deadline, self.remote.next_look)
        if not self.runs and not self._serving:
            # Only a killed tree's grace is left: look again soon, it usually ends at SIGTERM.
            deadline = min(deadline, self.now() + 0.05)
        return max(0.0, deadline - self.now())

    def _drain_wake(self, now: float) -> None:
        only_tries = True
        try:
            while data := os.read(self._wake_r, 512):
                only_tries = only_tries and data.count(b"t") == len(data)
        except BlockingIOError:
            pass
        if self._stopping and not self._serving:
            self.lifecycle.stop_everything(now, force=self._stopping > 1)
            return
        self.remote.woken()
        if self.on_wake is not None and not only_tries:
            self.hook(self.on_wake, now)

    def _next_at(self) -> float:
        return min(self._timers[0][0] if self._timers else float("inf"),
                   self._routine[0][0] if self._routine else float("inf"))

    def _fire_timers(self, now: float) -> None:
        for timers in (self._timers, self._routine):
            while timers and timers[0][0] <= now:
                _, _, callback = heapq.heappop(timers)
                self.hook(callback, now)
        if self.running and now >= self.launcher.next_scan:
            self.launcher.scan(now)
        if self.remote.enabled and now >= self.remote.next_look:
            self.remote.woken()  # what a lost notification would have said
            self.remote.next_look = now + LOOK_INTERVAL
        if now >= self._next_heartbeat:
            self.changes.heartbeat(self.runner_id, now, tries=bool(self.running)) \
                if self.runner_id is not None else None
            if self.store.kind == "postgresql" and self.runner_id is not None and self.runs:
                # Back from a partition, a lost runner finds its runs taken: it lets go of them.
                self.hook(self._let_go_of_taken_runs, now)
            if self.remote.executing or self.remote.enabled:  # its tries for other runs
                self.hook(self.remote.check, now)
            if self.running:
                self.launcher.sample(now)
            # a third of the lease at most: two heartbeats may be lost before it runs out
            self._next_heartbeat = now + min(HEARTBEAT_INTERVAL, self.config.host_lease / 3)

    def serves(self, task: LiveTask) -> bool:
        """Whether this runner runs the task (its queue is one it serves)."""
        return self.queues is None or task.spec.queue in self.queues

    def _let_go_of_taken_runs(self, now: float) -> None:
        for run_pk in self.store.taken_from(self.runner_id, list(self.runs)):  # type: ignore[arg-type]
            self.supersede(run_pk)

    def supersede(self, run_pk: int) -> None:
        """Another runner owns this run now (this one was declared lost): kill its process
        trees here and forget it; nothing more is written for it (the store refuses)."""
        live = self.runs.pop(run_pk, None)
        if live is None:
            return
        live.superseded = True
        self.remote.forget_run(run_pk)
        health_line = f"run {live.dag.dag_id} {live.run_id} was taken over by another runner"
        for task in live.tasks.values():
            if task.pid is not None:
                executor.kill_tree(task.pid, task.exit_path, task.kill_members)
        self.store.health.report(f"{health_line}; its tasks here were killed")

    def _flush(self) -> None:
        """Commit the queued writes in one transaction. While the database cannot take them
        (another process holds its lock, the disk is full) they stay queued, in order, and
        ``StoreUnavailable`` says so; the next attempt waits a growing backoff."""
        if not self.changes:
            return
        health = self.store.health
        now = self.now()
        if health.waiting(now):
            raise StoreUnavailable(health.error)
        taken = self.changes.take()
        try:
            lost = self.store.apply(taken, fence=self.runner_id, foreign=self.remote.fence())
        except BaseException as exc:
            self.changes.put_back(taken)  # nothing recorded is dropped: the next flush retries
            message = outage(exc)
            if message is None:
                raise
            line = health.failed(message, now)
            if line:
                health.report(f"{line}; {len(self.changes)} changes kept")
            raise StoreUnavailable(message) from None
        self.remote.committed()
        for key in lost:
            if isinstance(key, tuple):  # a try run here for another runner's run
                self.remote.supersede(key)
            else:
                self.supersede(key)
        ended = health.succeeded()
        if ended is None:
            return
        error, since = ended
        health.report(f"writing to {self.store.path} again after {now - since:.1f} s")
        if self.runner_id is not None:
            self.changes.runner_recovered(self.runner_id, error, since, now)
        # What failed in the outage is done again now: the owner's own catch-up, the wake
        # pass (operator requests, queued runs), and each hook that failed.
        redo, health.redo = health.redo, []
        if health.on_recovered is not None:
            self.call_at(now, lambda at, hook=health.on_recovered: hook(error, since, at))
        if self.on_wake is not None:
            self.call_at(now, self.on_wake)
        for work in redo:
            self.call_at(now, work)
