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
from flowtui.runner.endings import CLAIM_LOST, RUNNER_STOPPED, UNCOUNTED
from flowtui.runner.launching import ship_log
from flowtui.store import TaskState, host_name

if TYPE_CHECKING:  # (the offers' records are only loaded where several hosts share a store)
    from flowtui.runner.engine import Engine
    from flowtui.runner.live import LiveRun, LiveTask
    from flowtui.runner.model import DagSpec
    from flowtui.store.offers import Claimed, Elsewhere, Orphan, TryKey

S = TaskState
LOOK_INTERVAL = 1.0  # seconds between looks at the store when no notification came
STOP_WAIT = 10.0  # seconds a stopping runner gives the tries it ran for others to end
ORPHAN_WINDOW = 86400.0  # how far back a starting runner looks for its host's orphaned tries


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
        fields: dict[str, object] = {}
        if task.spec.sensor is not None and task.first_poke_at is None:
            task.first_poke_at = now  # a sensor's timeout counts from its first poke, anywhere
            fields["first_poke_at"] = now
        engine.slots.take_dag(task)
        self.elsewhere[(task.run.pk, task.task_id)] = task
        engine.lifecycle.move(task, S.QUEUED, "scheduler", reason, now, queue=queue,
                              next_try_at=None, **fields)
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
        or left by a runner that is gone."""
        self.follow_due = False
        if not self.elsewhere:
            return
        engine = self.engine
        engine.flush()  # the store holds what was decided here: a row read is never older
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
                if row.try_number != task.try_number + 1:
                    continue  # not a claim of this offer (a row older than it)
                self._claimed(task, row)
            if task.remote is None or row.try_number != task.try_number:
                continue
            if row.exited_at is not None:
                self._ended(task, row.exit_code, row.kill, min(row.exited_at, now), row)
            elif self._gone(row, now):
                self._left(task, row, now)

    def _left(self, task: LiveTask, row: Elsewhere, now: float) -> None:
        """The runner running the try is gone: on this host its process is looked for and
        watched (or its end read) as an adopted try's; on another, the host is lost."""
        engine = self.engine
        runner = task.remote
        self._forget((task.run.pk, task.task_id), task)
        task.remote = None
        if row.hostname == host_name():
            from flowtui.runner.adoption import resume_running

            resume_running(engine, task, now)
            return
        task.remote_result = (row.progress, row.metadata)
        engine.lifecycle.end_try(task, None, "host lost", now)
        if self.on_host_lost is not None and runner is not None:
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
        if row.exited_at is None and self._gone(row, now):
            return False  # its runner is gone: adopted as such (watched here, or host lost)
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
        if task.kill_reason is not None and (kill in UNCOUNTED or (
                kill is None and code is not None and code < 0)):
            kill = task.kill_reason  # the kill asked for here is why it ended
        self.engine.lifecycle.end_try(task, code, kill, at)

    def _gone(self, row: Elsewhere, now: float) -> bool:
        """Whether the runner running a try is gone: stopped, dead (on this host, where its
        process can be asked), or silent past its lease (on another)."""
        if row.runner_id == self.engine.runner_id:
            return False
        if row.stopped_at is not None:
            return True
        if row.hostname == host_name():
            return not executor.same_process(row.runner_pid or 0, row.runner_pid_start)
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
            run_folder = os.path.join(logs, dag_id, run_id)
            return (f"{run_folder}/{task_id}/{number}.log",
                    executor.exit_path_of(run_folder, task_id, number, engine.runner_id,
                                          claimed=True))

        config = engine.config
        claimed = store.offers.claim(
            engine.runner_id, actor=engine.actor, dag_ids=self.dag_ids(),  # type: ignore[arg-type]
            queues=engine.queues, limit=free,
            pools={name: size for name, size in config.pools.items() if name != "default"},
            default_room=(config.pool_size("default") or 0)
            - engine.slots.pool_used.get("default", 0),
            has_task=self._has_task, paths=paths)
        self.offers_seen = len(claimed) == free  # there may be more: look again once free
        for offer in claimed:
            key = (offer.run_pk, offer.task_id, offer.try_number)
            try:
                self._run(offer, now)
            except Exception as exc:  # nothing of it started: its owner decides (retry)
                held = self.executing.pop(key, None)
                if held is not None:
                    engine.slots.give_back(held)
                if key not in self.reported:
                    self._could_not_start(offer, f"could not start on this host: {exc}", now)

    def _has_task(self, dag_id: str, task_id: str) -> bool:
        dag = self.dags(dag_id)
        return dag is not None and task_id in dag.tasks

    def _could_not_start(self, offer: Claimed, why: str, now: float) -> None:
        key = (offer.run_pk, offer.task_id, offer.try_number)
        self.reported.add(key)
        self.engine.changes.try_exited(*key, now, None, why, None, {}, None)

    def _run(self, offer: Claimed, now: float) -> None:
        engine = self.engine
        dag = self.dags(offer.dag_id)
        live = self.foreign.get(offer.run_pk)
        if live is None and dag is not None and offer.run is not None:
            live = engine.lifecycle.new_live_run(dag, offer.run, now)
            live.foreign = True
            self.foreign[offer.run_pk] = live
        task = live.tasks.get(offer.task_id) if live is not None else None
        if task is None:  # the DAG here changed between the claim's look and now
            self._could_not_start(offer, f"could not start on this host: its DAG "
                                         f"{offer.dag_id} here has no task {offer.task_id}", now)
            return
        self._hold(task, (offer.run_pk, offer.task_id, offer.try_number), offer.log_path,
                   offer.exit_path, offer.pool, now)
        task.first_poke_at = offer.first_poke_at
        engine.launcher.spawn(task, now)

    def _hold(self, task: LiveTask, key: TryKey, log_path: str, exit_path: str, pool: str,
              now: float) -> None:
        """The try is this runner's to run (claimed, or taken over from a dead one)."""
        task.state = task.recorded = S.RUNNING
        task.try_number = key[2]
        task.log_path, task.exit_path = log_path, exit_path
        task.kill_reason = None
        task.kill_members = set()
        task.exit_code = None
        task.started_at = now
        task.shipped = task.ship_seq = 0
        task.pool_override = pool if pool != task.spec.pool else None
        self.engine.slots.take(task)
        self.executing[key] = task

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
        from a partition, they may have been ended and retried elsewhere), and every try the
        store says this runner runs is one it knows (a claim whose commit was not heard back
        would otherwise hold its task running for ever)."""
        engine = self.engine
        store = engine.store
        if self.executing:
            for key in store.offers.lost(engine.runner_id, list(self.executing)):  # type: ignore[arg-type]
                self.supersede(key)
        if self.enabled:
            known = set(self.executing) | self.reported | {
                (t.run.pk, t.task_id, t.try_number) for t in engine.running.values()}
            for key in store.offers.open_tries(engine.runner_id) - known:  # type: ignore[arg-type]
                owned = engine.runs.get(key[0])
                task = owned.tasks.get(key[1]) if owned is not None else None
                if task is not None and task.try_number == key[2] and task.remote is None:
                    continue  # one of this runner's own tries (starting, or being killed)
                self.reported.add(key)
                engine.changes.try_exited(*key, now, None, CLAIM_LOST, None, {}, None)
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
        """This runner stops. Tries it runs for its own runs keep running, as its other tasks
        do, for the next runner here to adopt. Those it runs for other runners' runs end (no
        other runner could watch them): one that ended already says how; the others get
        SIGTERM, SIGKILL after their kill_grace (ten seconds at most in all), and their owners
        run them again at once, not counting the try (unless the owner had asked for the
        kill, or the try ended well within its grace)."""
        engine = self.engine
        self.stops_asked(now)  # a kill the owner asked for is the reason, not this stop
        ending = []
        for key, task in list(self.executing.items()):
            if key[0] in engine.runs:
                del self.executing[key]  # adopted as this run's own by the next runner here
                if task.pid is not None:
                    engine.unwatch(task)
                continue
            if task.pid is None:
                self.exited(task, None, task.kill_reason or RUNNER_STOPPED, now)
                continue
            done, code = self._ended_now(task)
            if done:
                self._release(task)
                self.exited(task, code, task.kill_reason, now)
                continue
            if task.kill_reason is None:
                task.kill_reason = RUNNER_STOPPED
                task.kill_members = executor.terminate_tree(task.pid, task.exit_path)
            ending.append(task)
        deadline = engine.now() + min(STOP_WAIT, max((t.spec.kill_grace for t in ending),
                                                     default=0.0))
        while ending:
            for task in list(ending):
                done, code = self._ended_now(task)
                if not done and engine.now() < deadline:
                    continue
                executor.kill_tree(task.pid, task.exit_path, task.kill_members)
                self._release(task)
                ending.remove(task)
                self.exited(task, code, None if code == 0 else task.kill_reason, engine.now())
            if ending:
                engine.clock.sleep(0.02)

    @staticmethod
    def _ended_now(task: LiveTask) -> tuple[bool, int | None]:
        """Whether the try's process has ended, and its exit code when known."""
        pid = task.pid
        assert pid is not None
        try:
            reaped, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not a child (taken over from a dead runner): ask /proc
            if task.pid_start is not None and executor.same_process(pid, task.pid_start):
                return False, None
            return True, executor.read_exit_status(task.exit_path)
        if reaped == 0:
            return False, None
        return True, os.waitstatus_to_exitcode(status)

    def _release(self, task: LiveTask) -> None:
        self.engine.unwatch(task)
        self.engine.slots.give_back(task)
        task.pid = None

    def sweep(self, now: float) -> None:
        """At start: tries that earlier runners of this host (killed, crashed) claimed for
        other runners' runs. One still open is carried on here: its process watched, or its
        end read. One its run's runner ended meanwhile (the host was declared lost) must not
        run beside its retry: what is left of its tree is killed."""
        engine = self.engine
        if not self.enabled:
            return
        orphans = engine.store.offers.orphans(host_name(), engine.runner_id,  # type: ignore[arg-type]
                                              now - ORPHAN_WINDOW)
        leaders = executor.find_leaders({o.exit_path for o in orphans})
        for orphan in orphans:
            if executor.same_process(orphan.runner_pid, orphan.runner_pid_start):
                continue  # its runner lives (another home on this host)
            if not orphan.ended and orphan.owner_pid is not None and \
                    executor.same_process(orphan.owner_pid, orphan.owner_pid_start):
                continue  # its run's runner, alive on this host too, watches it (``_left``)
            pid = None if orphan.ended else executor.locate(
                orphan.pid, orphan.pid_start, orphan.exit_path, leaders)
            if orphan.ended or not self._carry_on(orphan, pid, now):
                executor.kill_tree(pid, orphan.exit_path)  # it must not run beside a retry

    def _carry_on(self, orphan: Orphan, pid: int | None, now: float) -> bool:
        engine = self.engine
        run_pk, task_id, number = orphan.key
        run = engine.store.get_run_by_pk(run_pk)
        dag = self.dags(run.dag_id) if run is not None else None
        if run is None or dag is None or task_id not in dag.tasks:
            return False
        pidfd = None
        start = executor.process_start_time(pid) if pid is not None else None
        if pid is not None:
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                pid = None
        if not engine.store.offers.take_over(orphan.key, orphan.runner_id,
                                             engine.runner_id, pid, start):  # type: ignore[arg-type]
            if pidfd is not None:
                os.close(pidfd)
            return False
        live = self.foreign.get(run_pk)
        if live is None:
            live = engine.lifecycle.new_live_run(dag, run, now)
            live.foreign = True
            self.foreign[run_pk] = live
        task = live.tasks[task_id]
        self._hold(task, orphan.key, orphan.log_path, orphan.exit_path, task.spec.pool, now)
        if pid is not None and pidfd is not None:
            task.pid, task.pidfd, task.pid_start = pid, pidfd, start
            task.watch = protocol.LogWatch(task.log_path, last_activity=now)
            engine.watch(task, pidfd)
            return True
        code = executor.read_exit_status(orphan.exit_path)
        engine.slots.give_back(task)
        executor.kill_tree(None, orphan.exit_path)  # a child that outlived its shell
        if code is None and executor.never_started(orphan.exit_path, orphan.log_path):
            self.exited(task, None, CLAIM_LOST, now)  # its process never started
        else:
            self.exited(task, code, None if code is not None else "zombie", now)
        return True

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
