"""The one door for task, try and run states: each move is checked against its table and written
with its event (one column list, with cause and actor) in the same transaction.

A ``Changes`` is a unit of work: the engine fills one per loop turn and ``Store.apply`` commits
it in one transaction; a CLI write fills one inside ``Store.transaction`` and applies it there.
Every statement that writes a state column of ``task_instances``, ``tries`` or ``dag_runs``
lives in this module; a second backend implements the same methods with its own SQL.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from flowtui.store.states import RunState, TaskState, TransitionError, check_transition

T = TaskState
R = RunState

# Which run moves the store accepts. An operator who reopens tasks of a finished run takes it
# back to running (a runner owns it) or to queued (the next runner adopts it). A run is born
# queued or running, or already ended when history is recorded from elsewhere.
RUN_MOVES: dict[RunState | None, frozenset[RunState]] = {
    None: frozenset({R.QUEUED, R.RUNNING, R.SUCCESS, R.FAILED}),
    R.QUEUED: frozenset({R.RUNNING, R.SUCCESS, R.FAILED}),
    R.RUNNING: frozenset({R.SUCCESS, R.FAILED, R.QUEUED}),
    R.SUCCESS: frozenset({R.RUNNING, R.QUEUED, R.FAILED}),
    R.FAILED: frozenset({R.RUNNING, R.QUEUED, R.SUCCESS}),
}

# Columns a task move may set besides its state (named, never SQL from outside the store).
_TASK_FIELDS = frozenset({"try_number", "start_date", "end_date", "exit_code", "pid",
                          "next_try_at", "max_tries", "first_poke_at", "queue"})
_RUN_FIELDS = frozenset({"start_date", "end_date", "runner_id"})

# The one column list of an event: what moved, from and to, why (cause) and who (actor).
EVENT = ("INSERT INTO events (at, kind, dag_id, run_id, task_id, try_number, old_state, "
         "new_state, cause, actor, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_TRY_START = ("INSERT INTO tries (run_pk, task_id, try_number, state, start_date, log_path, "
              "exit_path, runner_id) VALUES (?, ?, ?, 'running', ?, ?, ?, ?)")
_TRY_START_PID = ("INSERT INTO tries (run_pk, task_id, try_number, state, start_date, log_path, "
                  "exit_path, runner_id, pid, heartbeat_at) "
                  "VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?)")
_TRY_END = ("UPDATE tries SET state = ?, end_date = ?, exit_code = ?, reason = ?, progress = ?, "
            "metadata = ? WHERE run_pk = ? AND task_id = ? AND try_number = ?")
_TRY_FORGET = "DELETE FROM tries WHERE run_pk = ? AND task_id = ? AND try_number = ?"
_TRY_PID = "UPDATE tries SET pid = ?, heartbeat_at = ? WHERE run_pk = ? AND task_id = ? AND try_number = ?"
_TRY_END_PID = ("UPDATE tries SET state = ?, end_date = ?, exit_code = ?, reason = ?, progress = ?, "
                "metadata = ?, pid = ?, heartbeat_at = ? WHERE run_pk = ? AND task_id = ? AND "
                "try_number = ?")
_TRY_PID_START = "UPDATE tries SET pid_start = ? WHERE run_pk = ? AND task_id = ? AND try_number = ?"
_TRY_ADOPTED = ("UPDATE tries SET runner_id = ?, pid = ?, pid_start = ? WHERE run_pk = ? AND "
                "task_id = ? AND try_number = ?")
_TRY_PROGRESS = ("UPDATE tries SET progress = ?, metadata = ? WHERE run_pk = ? AND task_id = ? "
                 "AND try_number = ?")
_TRY_SAMPLE = ("UPDATE tries SET cpu_percent = ?, rss_bytes = ? WHERE run_pk = ? AND task_id = ? "
               "AND try_number = ?")
_TRY_HEARTBEAT = "UPDATE tries SET heartbeat_at = ? WHERE runner_id = ? AND end_date IS NULL"
_TI_REASON = "UPDATE task_instances SET reason = ?, updated_at = ? WHERE run_pk = ? AND task_id = ?"
_TI_PID = "UPDATE task_instances SET pid = ? WHERE run_pk = ? AND task_id = ?"
_TRY_STARTED_AT = ("UPDATE tries SET start_date = ? WHERE run_pk = ? AND task_id = ? AND "
                   "try_number = ?")
_TI_STARTED_AT = "UPDATE task_instances SET start_date = ? WHERE run_pk = ? AND task_id = ?"
_TI_MAX_TRIES = "UPDATE task_instances SET max_tries = ? WHERE run_pk = ? AND task_id = ?"
_TI_RETRY_AT = "UPDATE task_instances SET next_try_at = ? WHERE run_pk = ? AND task_id = ?"
_TI_FIRST_POKE = "UPDATE task_instances SET first_poke_at = ? WHERE run_pk = ? AND task_id = ?"
_QUEUED_REASON = ("UPDATE task_instances SET reason = ?, updated_at = ? WHERE state = 'none' AND "
                  "reason != ? AND run_pk IN (SELECT id FROM dag_runs WHERE dag_id = ? AND "
                  "state = 'queued' AND backfill_id IS NULL)")
_RUN_REASON = "UPDATE task_instances SET reason = ? WHERE run_pk = ? AND state = 'none'"
_RUNNER_HEARTBEAT = "UPDATE runners SET heartbeat_at = ? WHERE id = ?"
_RUNNER_HEALTH = ("UPDATE runners SET health = 'ok', last_error = ?, last_error_at = ? "
                  "WHERE id = ?")
_DATASET_EVENT = ("INSERT INTO dataset_events (dataset, partition, at, source, dag_id, run_id, "
                  "task_id, try_number, actor, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_DATASET_STATS = (  # right after _DATASET_EVENT: last_insert_rowid() is that event
    "INSERT INTO dataset_stats (dataset, events, partitions, newest_id) "
    "VALUES (?, 1, 1, last_insert_rowid()) ON CONFLICT (dataset) DO UPDATE SET "
    "events = dataset_stats.events + 1, newest_id = excluded.newest_id, "
    "partitions = dataset_stats.partitions + CASE WHEN EXISTS (SELECT 1 FROM dataset_events e "
    "WHERE e.dataset = excluded.dataset AND e.partition = ? AND e.id < excluded.newest_id) "
    "THEN 0 ELSE 1 END")
_LOG_CHUNK = ("INSERT INTO log_chunks (run_pk, task_id, try_number, seq, at, data) "
              "VALUES (?, ?, ?, ?, ?, ?)")
_REQUEST_DONE = "UPDATE requests SET done_at = ?, result = ? WHERE id = ?"
# A try run for another runner's run (SPEC 10): its runner says how it ended; the run's runner
# decides what that means (``end_try``) and writes the try's state.
_TRY_EXITED = ("UPDATE tries SET exited_at = ?, exit_code = ?, kill = ?, progress = ?, "
               "metadata = ?, pid = COALESCE(?, pid) WHERE run_pk = ? AND task_id = ? AND "
               "try_number = ? AND end_date IS NULL")
_TRY_STOP = ("UPDATE tries SET stop = ? WHERE run_pk = ? AND task_id = ? AND try_number = ? "
             "AND end_date IS NULL AND exited_at IS NULL")
# PostgreSQL: delivered to every runner when the commit lands. Its payload says it is only
# about tries across runners (offered, claimed, ended, asked to stop): a runner then looks at
# those alone, not at everything a wake-up makes it look at (requests, runs to adopt...).
_NOTIFY = "NOTIFY flowtui_wake, 'tries'"
TRIES_PAYLOAD = "tries"
_WITHDRAW = ("UPDATE task_instances SET state = 'scheduled', reason = ?, updated_at = ? "
             "WHERE run_pk = ? AND task_id = ? AND state = 'queued'")
_OFFERED = ("SELECT run_pk, task_id, dag_id, run_id, try_number, pool, pool_slots, first_poke_at "
            "FROM task_instances WHERE state = 'queued' AND dag_id = ANY(?) AND pool = ANY(?) "
            "{queues}ORDER BY priority DESC, updated_at, run_pk LIMIT ? FOR UPDATE SKIP LOCKED")
_TAKE_OVER = ("UPDATE tries SET runner_id = ?, pid = ?, pid_start = ? WHERE run_pk = ? AND "
              "task_id = ? AND try_number = ? AND runner_id = ? AND end_date IS NULL AND "
              "exited_at IS NULL")

_task_sql: dict[tuple[str, ...], str] = {}
_run_sql: dict[tuple[str, ...], str] = {}


def _task_update(names: tuple[str, ...]) -> str:
    sql = _task_sql.get(names)
    if sql is None:
        unknown = set(names) - _TASK_FIELDS - {"keep_end"}
        if unknown:
            raise ValueError(f"a task move cannot set {sorted(unknown)}")
        sets = ["state = ?", "reason = ?", "updated_at = ?"]
        sets += ["end_date = COALESCE(end_date, ?)" if n == "keep_end" else f"{n} = ?"
                 for n in names]
        sql = f"UPDATE task_instances SET {', '.join(sets)} WHERE run_pk = ? AND task_id = ?"
        _task_sql[names] = sql
    return sql


def _run_update(names: tuple[str, ...]) -> str:
    sql = _run_sql.get(names)
    if sql is None:
        unknown = set(names) - _RUN_FIELDS - {"first_start"}
        if unknown:
            raise ValueError(f"a run move cannot set {sorted(unknown)}")
        sets = ["state = ?", "updated_at = ?"]
        sets += ["start_date = COALESCE(start_date, ?)" if n == "first_start" else f"{n} = ?"
                 for n in names]
        sql = f"UPDATE dag_runs SET {', '.join(sets)} WHERE id = ?"
        _run_sql[names] = sql
    return sql


def check_run_move(old: RunState | None, new: RunState) -> None:
    if old == new:
        return
    if new not in RUN_MOVES[old]:
        raise TransitionError(f"run cannot go from {old.value if old else 'nothing'} "
                              f"to {new.value}")


class Changes:
    """Writes queued, in order, for one transaction."""

    __slots__ = ("ops", "runs", "tries", "_pids")

    def __init__(self) -> None:
        self.ops: list[tuple[str, Sequence[Any]] | None] = []  # None: a write taken back
        self.runs: list[int | None] = []  # the run each write is for (None: no run's)
        # The try each write is for (run_pk, task_id, try_number), None when not a try's:
        # a try run here for another runner's run is fenced by its own row (SPEC 10).
        self.tries: list[tuple[int, str, int] | None] = []
        # Where each try's pid write waits in ``ops``, until the commit takes it.
        self._pids: dict[tuple[int, str, int], int] = {}

    def _op(self, run_pk: int | None, op: tuple[str, Sequence[Any]],
            attempt: tuple[int, str, int] | None = None) -> None:
        self.ops.append(op)
        self.runs.append(run_pk)
        self.tries.append(attempt)

    def without(self, lost: set[Any], foreign: set[tuple[int, str, int]] = frozenset()
                ) -> "Changes":
        """These writes but those for ``lost`` runs (another runner owns them now) or lost
        tries (``foreign`` ones: run here for another runner's run, fenced by their own row)."""
        kept = Changes()
        for op, run_pk, attempt in zip(self.ops, self.runs, self.tries):
            if op is None or attempt in lost:
                continue
            if attempt not in foreign and run_pk in lost:
                continue
            kept._op(run_pk, op, attempt)
        return kept

    def __len__(self) -> int:
        return len(self.ops)

    def __bool__(self) -> bool:
        return bool(self.ops)

    def __iter__(self) -> Iterator[tuple[str, Sequence[Any]]]:
        return (op for op in self.ops if op is not None)

    def take(self) -> "Changes":
        """Hand over what is queued and start empty (what a commit takes)."""
        taken = Changes()
        taken.ops, self.ops = self.ops, []
        taken.runs, self.runs = self.runs, []
        taken.tries, self.tries = self.tries, []
        self._pids = {}
        return taken

    def put_back(self, taken: "Changes") -> None:
        """A commit that failed: its writes go back in front, in order, to be retried."""
        self.ops = taken.ops + self.ops
        self.runs = taken.runs + self.runs
        self.tries = taken.tries + self.tries
        self._pids = {}  # their places moved; the pid writes are simply done as queued

    # -- the transition functions ----------------------------------------------------------
    def move_task(self, run_pk: int, dag_id: str, run_id: str, task_id: str,
                  old: TaskState, new: TaskState, *, at: float, cause: str, actor: str,
                  reason: str = "", attempt: int | None = None, detail: str | None = None,
                  operator: bool = False, **fields: Any) -> None:
        """Move a task from ``old`` to ``new`` (checked; an operator may make any move), with
        its reason and the named columns in ``fields``; its event (of try ``attempt``) says
        why and who."""
        check_transition(old, new, operator=operator)
        names = tuple(fields)
        self._op(run_pk, (_task_update(names), (new.value, reason, at, *fields.values(),
                                               run_pk, task_id)))
        self._op(run_pk, (EVENT, (at, "task", dag_id, run_id, task_id, attempt or None,
                                  old.value, new.value, cause, actor,
                                  reason if detail is None else detail)))

    def move_run(self, run_pk: int, dag_id: str, run_id: str, old: RunState | None,
                 new: RunState, *, at: float, cause: str, actor: str, detail: str = "",
                 **fields: Any) -> None:
        """Move a run (checked against ``RUN_MOVES``) with the named columns in ``fields``
        (``first_start=t`` sets the start only when it has none)."""
        check_run_move(old, new)
        names = tuple(fields)
        self._op(run_pk, (_run_update(names), (new.value, at, *fields.values(), run_pk)))
        if old != new:
            self._op(run_pk, (EVENT, (at, "run", dag_id, run_id, None, None,
                                      old.value if old else None, new.value, cause, actor,
                                      detail)))

    def try_started(self, run_pk: int, task_id: str, try_number: int, at: float,
                    log_path: str, exit_path: str, runner_id: int | None,
                    pid: int | None = None) -> None:
        """A new try, running; with the pid of its process when it has one already."""
        if pid is None:
            self._op(run_pk, (_TRY_START, (run_pk, task_id, try_number, at, log_path,
                                          exit_path, runner_id)))
        else:
            self._op(run_pk, (_TRY_START_PID, (run_pk, task_id, try_number, at, log_path,
                                              exit_path, runner_id, pid, at)))

    def try_ended(self, run_pk: int, task_id: str, try_number: int, state: str, at: float,
                  exit_code: int | None, reason: str, progress: float | None,
                  metadata: dict[str, Any], pid: tuple[int, float] | None = None) -> None:
        """The try's end; with ``pid`` (from ``pending_pid``: the pid and when it was
        recorded) also the pid its start did not get to write."""
        if state not in ("success", "failed", "skipped", "rescheduled"):
            raise TransitionError(f"a try cannot end as {state}")
        meta = json.dumps(metadata) if metadata else "{}"
        if pid is None:
            self._op(run_pk, (_TRY_END, (state, at, exit_code, reason, progress, meta, run_pk,
                                        task_id, try_number)))
        else:
            self._op(run_pk, (_TRY_END_PID, (state, at, exit_code, reason, progress, meta,
                                            pid[0], pid[1], run_pk, task_id, try_number)))

    def dataset_event(self, dataset: str, partition: str, at: float, *, source: str,
                      dag_id: str | None = None, run_id: str | None = None,
                      task_id: str | None = None, try_number: int | None = None,
                      actor: str = "", metadata: dict[str, Any] | None = None,
                      run_pk: int | None = None) -> None:
        """A dataset's partition was written (SPEC 9): in the same transaction as the success
        of the task that wrote it, so one exists exactly when the other does."""
        self._op(run_pk, (_DATASET_EVENT, (dataset, partition, at, source, dag_id, run_id,
                                          task_id, try_number, actor,
                                          json.dumps(metadata) if metadata else "{}")))
        self._op(run_pk, (_DATASET_STATS, (dataset, partition)))

    def log_chunk(self, run_pk: int, task_id: str, try_number: int, seq: int, at: float,
                  data: bytes) -> None:
        """Bytes of a try's log, for readers on other hosts (SPEC 10)."""
        self._op(run_pk, (_LOG_CHUNK, (run_pk, task_id, try_number, seq, at, data)),
                 (run_pk, task_id, try_number))

    def try_forgotten(self, run_pk: int, task_id: str, try_number: int) -> None:
        """A try recorded whose process never started: it did not happen."""
        self._op(run_pk, (_TRY_FORGET, (run_pk, task_id, try_number)))

    def try_exited(self, run_pk: int, task_id: str, try_number: int, at: float,
                   exit_code: int | None, kill: str | None, progress: float | None,
                   metadata: dict[str, Any], pid: int | None) -> None:
        """A try run here for another runner's run ended (SPEC 10): how, for that runner to
        decide; and a wake-up for it once committed."""
        self._op(run_pk, (_TRY_EXITED, (at, exit_code, kill, progress,
                                        json.dumps(metadata) if metadata else "{}", pid,
                                        run_pk, task_id, try_number)),
                 (run_pk, task_id, try_number))
        self.notify()

    def try_stop(self, run_pk: int, task_id: str, try_number: int, reason: str) -> None:
        """Ask the runner running this try for the run's runner to end it (SPEC 10)."""
        self._op(run_pk, (_TRY_STOP, (reason, run_pk, task_id, try_number)))
        self.notify()

    def notify(self) -> None:
        """Wake every runner on the database once this commits (PostgreSQL only)."""
        self._op(None, (_NOTIFY, ()))

    # -- what is not a state ---------------------------------------------------------------
    def try_pid(self, run_pk: int, task_id: str, try_number: int, pid: int, at: float) -> None:
        self._pids[(run_pk, task_id, try_number)] = len(self.ops)
        attempt = (run_pk, task_id, try_number)
        self._op(run_pk, (_TRY_PID, (pid, at, run_pk, task_id, try_number)), attempt)
        self._op(run_pk, (_TI_PID, (pid, run_pk, task_id)), attempt)

    def pending_pid(self, run_pk: int, task_id: str, try_number: int
                    ) -> tuple[int, float] | None:
        """The pid write of this try, taken back when it is still queued (a short task ended
        before the commit that would carry it): its end writes the pid instead, two statements
        fewer. Returns the pid and when it was recorded."""
        index = self._pids.pop((run_pk, task_id, try_number), None)
        if index is None:
            return None
        op = self.ops[index]
        assert op is not None and op[0] == _TRY_PID
        self.ops[index] = self.ops[index + 1] = None
        return op[1][0], op[1][1]

    def try_command_started(self, run_pk: int, task_id: str, try_number: int,
                            at: float) -> None:
        """A try's command started well after its process (its gate held through a database
        outage): its start is the command's, which its timeout counts from."""
        attempt = (run_pk, task_id, try_number)
        self._op(run_pk, (_TRY_STARTED_AT, (at, run_pk, task_id, try_number)), attempt)
        self._op(run_pk, (_TI_STARTED_AT, (at, run_pk, task_id)), attempt)

    def try_pid_start(self, run_pk: int, task_id: str, try_number: int,
                      pid_start: float | None) -> None:
        self._op(run_pk, (_TRY_PID_START, (pid_start, run_pk, task_id, try_number)),
                 (run_pk, task_id, try_number))

    def try_adopted(self, run_pk: int, task_id: str, try_number: int, runner_id: int | None,
                    pid: int, pid_start: float | None) -> None:
        self._op(run_pk, (_TRY_ADOPTED, (runner_id, pid, pid_start, run_pk, task_id,
                                        try_number)))
        self._op(run_pk, (_TI_PID, (pid, run_pk, task_id)))

    def try_progress(self, run_pk: int, task_id: str, try_number: int,
                     progress: float | None, metadata: dict[str, Any]) -> None:
        self._op(run_pk, (_TRY_PROGRESS, (progress, json.dumps(metadata), run_pk, task_id,
                                         try_number)), (run_pk, task_id, try_number))

    def try_sample(self, run_pk: int, task_id: str, try_number: int, cpu: float,
                   rss: int) -> None:
        self._op(run_pk, (_TRY_SAMPLE, (cpu, rss, run_pk, task_id, try_number)),
                 (run_pk, task_id, try_number))

    def task_reason(self, run_pk: int, task_id: str, reason: str, at: float) -> None:
        self._op(run_pk, (_TI_REASON, (reason, at, run_pk, task_id)))

    def task_retry_at(self, run_pk: int, task_id: str, at: float) -> None:
        """A task waiting for its retry is due at ``at`` (an operator's retry now)."""
        self._op(run_pk, (_TI_RETRY_AT, (at, run_pk, task_id)))

    def task_max_tries(self, run_pk: int, task_id: str, max_tries: int) -> None:
        self._op(run_pk, (_TI_MAX_TRIES, (max_tries, run_pk, task_id)))

    def task_first_poke(self, run_pk: int, task_id: str, at: float) -> None:
        self._op(run_pk, (_TI_FIRST_POKE, (at, run_pk, task_id)))

    def queued_reason(self, dag_id: str, reason: str, at: float) -> None:
        """Say why the tasks of a DAG's queued (scheduled and manual) runs do not start."""
        self._op(None, (_QUEUED_REASON, (reason, at, reason, dag_id)))

    def run_reason(self, run_pk: int, reason: str) -> None:
        """Say why the tasks of one run that have not started wait."""
        self._op(run_pk, (_RUN_REASON, (reason, run_pk)))

    def heartbeat(self, runner_id: int, at: float, tries: bool) -> None:
        self._op(None, (_RUNNER_HEARTBEAT, (at, runner_id)))
        if tries:
            self._op(None, (_TRY_HEARTBEAT, (at, runner_id)))

    def runner_recovered(self, runner_id: int, error: str, since: float, until: float) -> None:
        self._op(None, (_RUNNER_HEALTH, (f"{error}; writes waited {until - since:.1f} s", since,
                                          runner_id)))

    def request_done(self, request_id: int, result: str, at: float) -> None:
        self._op(None, (_REQUEST_DONE, (at, result, request_id)))


def insert_run(conn: Any, *, dag_id: str, run_id: str, run_type: str, logical_date: float,
               data_interval_start: float, data_interval_end: float, conf: dict[str, Any],
               state: RunState, runner_id: int | None, backfill_id: int | None,
               tasks: Sequence[tuple[str, int, str, int, int]], at: float, cause: str,
               actor: str, detail: str = "", partition: str | None = None) -> int:
    """A run's birth, in the caller's transaction: the run (``queued`` or ``running``), its
    task instances ``(task_id, max_tries, pool, slots, priority)`` as ``none``, and its event.
    Raises ``sqlite3.IntegrityError`` when the DAG already has that run id."""
    check_run_move(None, state)
    cur = conn.execute(
        "INSERT INTO dag_runs (dag_id, run_id, run_type, logical_date, data_interval_start, "
        "data_interval_end, conf, state, start_date, runner_id, backfill_id, created_at, "
        "updated_at, partition) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (dag_id, run_id, run_type, logical_date, data_interval_start, data_interval_end,
         json.dumps(conf), state.value, at if state == R.RUNNING else None, runner_id,
         backfill_id, at, at, partition))
    run_pk = int(cur.lastrowid or 0)
    conn.executemany(
        "INSERT INTO task_instances (run_pk, dag_id, run_id, task_id, state, max_tries, pool, "
        "pool_slots, priority, updated_at) VALUES (?, ?, ?, ?, 'none', ?, ?, ?, ?, ?)",
        [(run_pk, dag_id, run_id, t[0], t[1], t[2], t[3], t[4], at) for t in tasks])
    conn.execute(EVENT, (at, "run", dag_id, run_id, None, None, None, state.value, cause, actor,
                          detail))
    return run_pk


def add_task_instances(conn: Any, run_pk: int, dag_id: str, run_id: str,
                       tasks: Sequence[tuple[str, int, str, int, int]], at: float) -> None:
    """Tasks added to a DAG since its run was created join the run as ``none``."""
    conn.executemany(
        "INSERT OR IGNORE INTO task_instances (run_pk, dag_id, run_id, task_id, state, "
        "max_tries, pool, pool_slots, priority, updated_at) "
        "VALUES (?, ?, ?, ?, 'none', ?, ?, ?, ?, ?)",
        [(run_pk, dag_id, run_id, t[0], t[1], t[2], t[3], t[4], at) for t in tasks])


def withdraw_offer(conn: Any, run_pk: int, dag_id: str, run_id: str, task_id: str,
                   try_number: int, *, at: float, actor: str, reason: str) -> bool:
    """Take back a task offered to every runner (SPEC 10), in the caller's transaction: False
    when a runner claimed it first (it is running there now)."""
    if conn.execute(_WITHDRAW, (reason, at, run_pk, task_id)).rowcount != 1:
        return False
    conn.execute(EVENT, (at, "task", dag_id, run_id, task_id, try_number or None, T.QUEUED.value,
                         T.SCHEDULED.value, "scheduler", actor, reason))
    return True


def claim_offers(conn: Any, runner_id: int, *, at: float, actor: str, dag_ids: Sequence[str],
                 pools: Sequence[str], queues: Sequence[str] | None, limit: int,
                 fits: Any, paths: Any) -> list[tuple[Any, ...]]:
    """Claim offered tasks for this runner, in the caller's transaction (SPEC 10): up to
    ``limit`` of those in ``queues`` (None: any) of DAGs it has loaded, in ``pools`` (those
    with room), the highest priority first, each only if ``fits(dag_id, task_id, pool,
    slots)`` (the task is in its DAG here, its pool's room holds it). Each claimed task moves
    to running with a new try of this runner's, whose log is at ``paths(dag_id, run_id,
    task_id, try_number)`` -> (log, exit). Rows another claimer holds are skipped, not waited
    for. Returns the claimed rows (``_OFFERED``'s columns, the try number already the new
    one's, then the log and exit paths)."""
    sql = _OFFERED.format(queues="AND queue = ANY(?) " if queues is not None else "")
    params: tuple = (list(dag_ids), list(pools)) + (
        (list(queues),) if queues is not None else ()) + (limit * 4 + 50,)
    claimed = []
    for row in conn.execute(sql, params).fetchall():
        if len(claimed) >= limit:
            break
        run_pk, task_id, dag_id, run_id, try_number, pool, slots, first_poke = row
        if not fits(dag_id, task_id, pool, slots):
            continue
        number = try_number + 1
        log_path, exit_path = paths(dag_id, run_id, task_id, number)
        conn.execute(_task_update(("try_number", "start_date", "end_date", "exit_code", "pid",
                                   "next_try_at")),
                     (T.RUNNING.value, "", at, number, at, None, None, None, None, run_pk,
                      task_id))
        conn.execute(EVENT, (at, "task", dag_id, run_id, task_id, number, T.QUEUED.value,
                             T.RUNNING.value, "scheduler", actor, "claimed"))
        conn.execute(_TRY_START, (run_pk, task_id, number, at, log_path, exit_path, runner_id))
        claimed.append((run_pk, task_id, dag_id, run_id, number, pool, slots, first_poke,
                        log_path, exit_path))
    if claimed:
        conn.execute(_NOTIFY)  # the runs' runners learn their tasks started
    return claimed


def take_over_try(conn: Any, key: tuple[int, str, int], dead: int, runner_id: int,
                  pid: int | None, pid_start: float | None) -> bool:
    """A try a dead runner of this host claimed becomes this runner's (in the caller's
    transaction), unless its run's runner ended it meanwhile: False then."""
    return conn.execute(_TAKE_OVER, (runner_id, pid, pid_start, *key, dead)).rowcount == 1
