"""Tries across runners (SPEC 10, PostgreSQL): a run's runner offers the ready tasks it cannot
start itself, any runner serving their queue claims them within its free slots, and the run's
runner follows those tries to their end (``store/offers.py`` has the store's side).

The run's runner (its owner) keeps every decision: trigger rules, retries, timeouts, the run's
end. The claiming runner only executes: it starts the try as a local process, kills it when the
owner asks, and says on the try's row how it ended. A claimer silent past its lease is lost: the
owner fails its tries ``host lost`` and retries them; the claimer, back, finds its tries ended
(every write of it for them is refused) and kills their trees.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from flowtui.runner import executor, protocol
from flowtui.runner.endings import RUNNER_STOPPED
from flowtui.runner.launching import ship_log
from flowtui.store import TaskState
from flowtui.store.offers import Elsewhere, TryKey

if TYPE_CHECKING:
    from flowtui.runner.engine import Engine
    from flowtui.runner.live import LiveRun, LiveTask
    from flowtui.runner.model import DagSpec
    from flowtui.store.offers import Claimed

S = TaskState
LOOK_INTERVAL = 1.0  # seconds between looks at the store when no notification came


class Remote:
    """The engine's side of tries that cross runners."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.enabled = False  # offering and claiming: a daemon on PostgreSQL (``enable``)
        self.dags: Callable[[str], DagSpec | None] = lambda dag_id: None
        self.dag_ids: Callable[[], list[str]] = list
        # The owner's side: its tasks offered, or running on a runner (itself included).
        self.elsewhere: dict[tuple[int, str], LiveTask] = {}
        # The claimer's side: the tries it runs for other runs (the run's owner may be itself).
        self.foreign: dict[int, LiveRun] = {}
        self.executing: dict[TryKey, LiveTask] = {}
        self.reported: set[TryKey] = set()  # ends written but not yet committed
        self.look_due = False
        self.follow_due = False
        self.offers_seen = False
        self.next_look = 0.0
        self.on_host_lost: Callable[[int, LiveTask, float], None] | None = None

    def enable(self, dags: Callable[[str], DagSpec | None],
               dag_ids: Callable[[], list[str]]) -> None:
        self.enabled = True
        self.dags, self.dag_ids = dags, dag_ids
        self.look_due = self.follow_due = True

    def woken(self) -> None:
        """A notification (or the periodic look): offers and remote ends may be waiting."""
        if self.enabled or self.elsewhere:
            self.look_due = self.follow_due = True

    def fence(self) -> set[TryKey]:
        """The tries whose writes are fenced by their own row at the next commit."""
        return set(self.executing) | self.reported

    def committed(self) -> None:
        self.reported.clear()

    # -- the owner's side ------------------------------------------------------------------
    def offer(self, task: LiveTask, now: float) -> None:
        """Let any runner serving the task's queue start it (it waits ``queued``)."""
        engine = self.engine
        queue = task.spec.queue
        if engine.serves(task):
            reason = (f"waiting for a free slot (parallelism reached here: "
                      f"{engine.slots.active}/{engine.config.parallelism}); any runner serving "
                      f"queue {queue} may take it")
        else:
            reason = (f"waiting for a runner serving queue {queue} "
                      f"('flowtui runner --queues {queue}' on a host)")
        engine.slots.take_dag(task)
        self.elsewhere[(task.run.pk, task.task_id)] = task
        engine.lifecycle.move(task, S.QUEUED, "scheduler", reason, now, queue=queue,
                              next_try_at=None)
        engine.changes.notify()

    def settle(self, task: LiveTask, now: float) -> None:
        """Before the owner moves an offered task itself (a clear, a mark, a timeout): take the
        offer back, or learn that a runner claimed it (it is then running there)."""
        key = (task.run.pk, task.task_id)
        if task.state != S.QUEUED or self.elsewhere.get(key) is not task:
            return
        engine = self.engine
        live = task.run
        engine.flush()  # the offer is in the store before it is taken back
        if engine.store.offers.withdraw(live.pk, live.dag.dag_id, live.run_id, task.task_id,
                                        task.try_number, actor=engine.actor,
                                        reason="taken back by its run's runner"):
            del self.elsewhere[key]
            engine.slots.take_dag(task, -1)
            task.state = task.recorded = S.SCHEDULED
            return
        self.follow(engine.now(), {live.pk})

    def follow(self, now: float, runs: set[int] | None = None) -> None:
        """Read what became of the owner's tasks offered or running elsewhere: claimed, ended,
        or lost with their runner's host."""
        self.follow_due = False
        if not self.elsewhere:
            return
        engine = self.engine
        pks = runs if runs is not None else {pk for pk, _ in self.elsewhere}
        found = engine.store.offers.elsewhere(pks)
        for key, task in list(self.elsewhere.items()):
            if key[0] not in pks or self.elsewhere.get(key) is not task:
                continue
            if task.run.superseded or engine.runs.get(key[0]) is not task.run:
                self._forget(key, task)
                continue
            row = found.get(key)
            if row is None or row.state != "running" or row.runner_id is None:
                continue  # still offered
            if task.state == S.QUEUED:
                self._claimed(task, row)
            if task.remote is None or row.try_number != task.try_number:
                continue
            if row.exited_at is not None:
                self._ended(task, row.exit_code, row.kill, min(row.exited_at, now), row)
            elif self._lost(row, now):
                runner = task.remote
                self._ended(task, None, "host lost", now, row)
                if self.on_host_lost is not None:
                    engine.hook(self.on_host_lost, runner, task, now)

    def adopt(self, task: LiveTask, attempt: object, now: float) -> bool:
        """An adopted run's task the store says is offered or running: True when it is (or
        was) another runner's to run, and is followed here from now on."""
        engine = self.engine
        live = task.run
        key = (live.pk, task.task_id)
        if task.state == S.QUEUED:
            if engine.store.kind != "postgresql":
                return False
            engine.slots.take_dag(task)
            self.elsewhere[key] = task
            self.follow_due = True
            return True
        runner = getattr(attempt, "runner_id", None)
        if engine.store.kind != "postgresql" or runner is None or (
                runner == engine.runner_id and (live.pk, task.task_id, task.try_number)
                not in self.executing):
            return False  # a try of this runner's own: the adoption watches its process
        row = engine.store.offers.elsewhere({live.pk}).get(key)
        if row is None or row.try_number != task.try_number or row.runner_id != runner:
            return False
        if row.exited_at is None and runner != engine.runner_id and self._lost(row, now):
            return False  # its runner is gone: the adoption ends it as a lost host's try
        engine.slots.take_dag(task)
        self.elsewhere[key] = task
        self._claimed(task, row)
        if row.exited_at is not None:
            self._ended(task, row.exit_code, row.kill, min(row.exited_at, now), row)
        return True

    def forget_run(self, run_pk: int) -> None:
        """A run no longer the owner's (let go of, or taken by another runner)."""
        for key, task in list(self.elsewhere.items()):
            if key[0] == run_pk:
                self._forget(key, task)

    def _forget(self, key: tuple[int, str], task: LiveTask) -> None:
        del self.elsewhere[key]
        self.engine.slots.take_dag(task, -1)

    def _claimed(self, task: LiveTask, row: Elsewhere) -> None:
        task.state = task.recorded = S.RUNNING
        task.try_number = row.try_number
        task.remote = row.runner_id
        task.started_at = row.start_date
        task.log_path, task.exit_path = row.log_path, row.exit_path
        task.kill_reason = None
        task.reason = ""
        self.engine.notify(task.run, task, "running", "")

    def _ended(self, task: LiveTask, code: int | None, kill: str | None, at: float,
               row: Elsewhere) -> None:
        self._forget((task.run.pk, task.task_id), task)
        task.remote = None
        task.remote_result = (row.progress, row.metadata)
        if kill is None and task.kill_reason is not None and code is not None and code < 0:
            kill = task.kill_reason  # the stop asked for reached it as a signal
        self.engine.lifecycle.end_try(task, code, kill, at)

    def _lost(self, row: Elsewhere, now: float) -> bool:
        """Whether the runner running a try stopped renewing its lease (or stopped)."""
        if row.runner_id == self.engine.runner_id:
            return False
        if row.stopped_at is not None:
            return True
        return now - (row.heartbeat_at or 0.0) >= (row.lease or 60.0)

    def stop_try(self, task: LiveTask, reason: str) -> None:
        """Ask the runner running the task's try to end it; its end arrives as usual."""
        if task.kill_reason is not None:
            return
        task.kill_reason = reason
        self.engine.changes.try_stop(task.run.pk, task.task_id, task.try_number, reason)

    # -- the claimer's side ----------------------------------------------------------------
    def look(self, now: float) -> None:
        """Claim offered tasks in the queues served here, within the free slots."""
        self.look_due = False
        engine = self.engine
        free = engine.config.parallelism - engine.slots.active
        if not self.enabled or engine.stopping or free <= 0:
            return
        store = engine.store
        self.offers_seen = False
        if not store.offers.any_offered(engine.queues):
            return
        logs = str(engine.config.logs_dir)

        def paths(dag_id: str, run_id: str, task_id: str, number: int) -> tuple[str, str]:
            folder = os.path.join(logs, dag_id, run_id, task_id)
            return f"{folder}/{number}.log", f"{folder}/{number}.exit"

        claimed = store.offers.claim(
            engine.runner_id, actor=engine.actor, dag_ids=self.dag_ids(),  # type: ignore[arg-type]
            queues=engine.queues, limit=free, pool_size=self._pool_size, paths=paths)
        self.offers_seen = len(claimed) == free  # there may be more: look again once free
        for offer in claimed:
            self._run(offer, now)

    def _pool_size(self, pool: str) -> float | None:
        """A pool's slots across every host; the default pool is each runner's own (its
        parallelism, counted by the free slots a look claims within)."""
        return float("inf") if pool == "default" else self.engine.config.pool_size(pool)

    def _run(self, offer: Claimed, now: float) -> None:
        engine = self.engine
        dag = self.dags(offer.dag_id)
        live = self.foreign.get(offer.run_pk)
        run = None if live is not None or dag is None else \
            engine.store.get_run_by_pk(offer.run_pk)
        if live is None and dag is not None and run is not None:
            live = engine.lifecycle.new_live_run(dag, run, now)
            live.foreign = True
            self.foreign[offer.run_pk] = live
        task = live.tasks.get(offer.task_id) if live is not None else None
        key = (offer.run_pk, offer.task_id, offer.try_number)
        if task is None:  # the DAG here lost the task since the owner's version had it
            self.reported.add(key)
            engine.changes.try_exited(offer.run_pk, offer.task_id, offer.try_number, now, None,
                                      f"could not start on this host: its DAG {offer.dag_id} "
                                      f"here has no task {offer.task_id}", None, {}, None)
            return
        task.state = task.recorded = S.RUNNING
        task.try_number = offer.try_number
        task.log_path, task.exit_path = offer.log_path, offer.exit_path
        task.kill_reason = None
        task.kill_members = set()
        task.exit_code = None
        task.started_at = now
        task.shipped = task.ship_seq = 0
        task.first_poke_at = offer.first_poke_at
        task.pool_override = offer.pool if offer.pool != task.spec.pool else None
        engine.slots.take(task)
        self.executing[key] = task
        engine.launcher.spawn(task, now)

    def exited(self, task: LiveTask, code: int | None, kill_reason: str | None,
               now: float) -> None:
        """A try run here for a run's owner ended: say how, for the owner to decide."""
        engine = self.engine
        live = task.run
        key = (live.pk, task.task_id, task.try_number)
        if self.executing.pop(key, None) is None:
            return  # ended by its owner already (this host was lost): nothing more is said
        if engine.ships_logs:
            ship_log(engine.changes, task, now)
        watch = task.watch
        if watch is not None:
            protocol.finish(watch, now)
        task.watch = None
        task.proc = None
        pid = engine.changes.pending_pid(*key)
        self.reported.add(key)
        engine.changes.try_exited(live.pk, task.task_id, task.try_number, now, code, kill_reason,
                                  watch.progress if watch else None,
                                  watch.metadata if watch else {}, pid[0] if pid else None)
        self._drop(live)

    def _drop(self, live: LiveRun) -> None:
        if not any(key[0] == live.pk for key in self.executing):
            self.foreign.pop(live.pk, None)
            self.engine.launcher.forget_log_dirs(live)

    def stops_asked(self, now: float) -> None:
        """Kill the tries run here whose owner asked for it (an operator's kill, a timeout)."""
        if not self.executing:
            return
        for key, reason in self.engine.store.offers.stops(self.engine.runner_id).items():
            task = self.executing.get(key)
            if task is not None and task.pid is not None and task.kill_reason is None:
                self.engine.lifecycle.kill(task, reason, now)

    def check(self, now: float) -> None:
        """At each heartbeat: the tries run here for others are still this runner's (back
        from a partition, they may have been ended and retried elsewhere)."""
        if self.executing:
            for key in self.engine.store.offers.lost(self.engine.runner_id, list(self.executing)):
                self.supersede(key)
        self.stops_asked(now)

    def supersede(self, key: TryKey) -> None:
        """The owner ended this try (this host was declared lost): kill its tree here and
        write nothing more of it."""
        task = self.executing.pop(key, None)
        if task is None:
            return
        if task.pid is not None:
            executor.kill_tree(task.pid, task.exit_path, task.kill_members)
        live = task.run
        self.engine.store.health.report(
            f"try {key[2]} of {live.dag.dag_id} {live.run_id} {task.task_id} was ended by its "
            f"run's runner (this host was declared lost); its process tree here was killed")
        self._drop(live)

    def stop(self, now: float) -> None:
        """This runner stops: the tries it runs for other runs end now (nobody else could
        watch them), and their owners try them again."""
        engine = self.engine
        for task in list(self.executing.values()):
            if task.pid is not None:
                executor.kill_tree(task.pid, task.exit_path, task.kill_members)
                engine.unwatch(task)
                engine.slots.give_back(task)
                task.pid = None
            self.exited(task, None, RUNNER_STOPPED, now)

    # -- the loop --------------------------------------------------------------------------
    def before_launch(self, now: float) -> None:
        if self.follow_due:
            self.follow(now)
            self.stops_asked(now)

    def after_launch(self, now: float) -> None:
        engine = self.engine
        if self.offers_seen and engine.slots.active < engine.config.parallelism:
            self.look_due = True  # more may wait than the last look could take
        if self.look_due:
            self.look(now)
