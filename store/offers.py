"""Tasks offered to every runner on the database (SPEC 10, PostgreSQL).

The runner that owns a run keeps deciding it (trigger rules, retries, its end). A ready task it
cannot start itself — no free slot there, or a queue it does not serve — it offers: the task
waits ``queued`` with its queue. Any runner serving that queue claims it with ``SELECT … FOR
UPDATE SKIP LOCKED`` within its free slots and the pools' global room, runs the try as a local
process, and writes on the try's row how it ended (``exited_at``, ``exit_code``, ``kill``); the
owner reads that and ends the try as it would one of its own. The owner asks for a stop through
the try's ``stop``. Every write of the claimer about its try is fenced by the try's row: once
the owner ended it (the claimer's host was lost), nothing more of it is accepted.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flowtui.store import changes
from flowtui.store.models import RUN_COLUMNS, Run

if TYPE_CHECKING:
    from flowtui.store.db import Store

TryKey = tuple[int, str, int]  # run_pk, task_id, try_number


@dataclass(frozen=True, slots=True)
class Claimed:
    """A task this runner claimed: its try is recorded as running here."""
    run_pk: int
    task_id: str
    dag_id: str
    run_id: str
    try_number: int
    pool: str
    pool_slots: int
    first_poke_at: float | None
    log_path: str
    exit_path: str
    run: Run | None = None  # read in the claim's transaction: starting it needs no more reads


@dataclass(frozen=True, slots=True)
class Elsewhere:
    """What the store says of an owner's task offered or running on another runner."""
    state: str
    try_number: int
    runner_id: int | None
    start_date: float | None
    log_path: str
    exit_path: str
    exited_at: float | None
    exit_code: int | None
    kill: str | None
    progress: float | None
    metadata: dict[str, Any]
    hostname: str | None
    heartbeat_at: float | None
    lease: float | None
    stopped_at: float | None
    pid: int | None
    pid_start: float | None
    runner_pid: int | None
    runner_pid_start: float | None


@dataclass(frozen=True, slots=True)
class Orphan:
    """A try a runner of this host that is gone had claimed for another runner's run."""
    key: TryKey
    runner_id: int
    runner_pid: int
    runner_pid_start: float | None
    pid: int | None
    pid_start: float | None
    log_path: str
    exit_path: str
    ended: bool  # the run's runner ended it already (the host was declared lost meanwhile)
    owner_pid: int | None  # the run's runner's process, when on this host
    owner_pid_start: float | None


class Offers:
    def __init__(self, store: Store) -> None:
        self.store = store

    def any_offered(self, queues: Iterable[str] | None) -> bool:
        """Whether some task waits to be claimed (a cheap look before taking any lock)."""
        if queues is None:
            row = self.store.conn.execute(
                "SELECT 1 FROM task_instances WHERE state = 'queued' LIMIT 1").fetchone()
        else:
            row = self.store.conn.execute(
                "SELECT 1 FROM task_instances WHERE state = 'queued' AND queue = ANY(?) LIMIT 1",
                (list(queues),)).fetchone()
        return row is not None

    def claim(self, runner_id: int, *, actor: str, dag_ids: Sequence[str],
              queues: Iterable[str] | None, limit: int, pools: dict[str, int],
              default_room: int, has_task: Callable[[str, str], bool],
              paths: Callable[[str, str, str, int], tuple[str, str]]) -> list[Claimed]:
        """Claim up to ``limit`` offered tasks for this runner (``changes.claim_offers``):
        named ``pools`` (name -> size) within their room across every host, the default pool
        within ``default_room`` (each runner's own), tasks its DAGs here have."""
        store = self.store
        with store.launch_lock(), store.transaction() as conn:
            used = {pool: int(n or 0) for pool, n in conn.execute(
                "SELECT pool, sum(pool_slots) FROM task_instances WHERE state = 'running' "
                "GROUP BY pool").fetchall()}
            room = {pool: size - used.get(pool, 0) for pool, size in pools.items()}
            room["default"] = default_room

            def fits(dag_id: str, task_id: str, pool: str, slots: int) -> bool:
                if room.get(pool, 0) < slots or not has_task(dag_id, task_id):
                    return False
                room[pool] -= slots
                return True

            rows = changes.claim_offers(
                conn, runner_id, at=store.now(), actor=actor, dag_ids=dag_ids,
                pools=[pool for pool, free in room.items() if free > 0],
                queues=None if queues is None else sorted(queues), limit=limit, fits=fits,
                paths=paths)
            runs = {}
            if rows:
                runs = {r[0]: Run.from_row(r) for r in conn.execute(
                    f"SELECT {RUN_COLUMNS} FROM dag_runs WHERE id = ANY(?)",
                    (sorted({row[0] for row in rows}),))}
        return [Claimed(*row, run=runs.get(row[0])) for row in rows]

    def withdraw(self, run_pk: int, dag_id: str, run_id: str, task_id: str, try_number: int,
                 *, actor: str, reason: str) -> bool:
        """The owner takes an offered task back; False when a runner claimed it first."""
        store = self.store
        with store.transaction() as conn:
            return changes.withdraw_offer(conn, run_pk, dag_id, run_id, task_id, try_number,
                                          at=store.now(), actor=actor, reason=reason)

    def elsewhere(self, run_pks: Iterable[int]) -> dict[tuple[int, str], Elsewhere]:
        """The owner's look at its tasks queued or running in these runs, with their current
        try and the runner that claimed it."""
        pks = sorted(set(run_pks))
        if not pks:
            return {}
        rows = self.store.conn.execute(
            "SELECT i.run_pk, i.task_id, i.state, i.try_number, t.runner_id, t.start_date, "
            "t.log_path, t.exit_path, t.exited_at, t.exit_code, t.kill, t.progress, t.metadata, "
            "r.hostname, r.heartbeat_at, r.lease, r.stopped_at, t.pid, t.pid_start, r.pid, "
            "r.pid_start "
            "FROM task_instances i LEFT JOIN tries t ON t.run_pk = i.run_pk AND "
            "t.task_id = i.task_id AND t.try_number = i.try_number LEFT JOIN runners r ON "
            "r.id = t.runner_id WHERE i.run_pk = ANY(?) AND i.state IN ('queued', 'running')",
            (pks,)).fetchall()
        found = {}
        for row in rows:
            values = list(row[2:])
            values[4] = values[4] or ""
            values[5] = values[5] or ""
            values[10] = json.loads(values[10]) if values[10] else {}
            found[(row[0], row[1])] = Elsewhere(*values)
        return found

    def stops(self, runner_id: int) -> dict[TryKey, str]:
        """The tries this runner runs for other runs whose owner asked them to stop."""
        return {(r[0], r[1], r[2]): r[3] for r in self.store.conn.execute(
            "SELECT run_pk, task_id, try_number, stop FROM tries WHERE runner_id = ? AND "
            "end_date IS NULL AND exited_at IS NULL AND stop IS NOT NULL", (runner_id,))}

    def lost(self, runner_id: int, keys: Iterable[TryKey], *, lock: bool = False) -> set[TryKey]:
        """Of these tries run here for other runs, those no longer this runner's to write: the
        run's runner ended them (this host was declared lost) or a newer try replaced them.
        With ``lock``, the rows kept are locked to the caller's transaction (its fence)."""
        keys = list(keys)
        if not keys:
            return set()
        held: set[TryKey] = set()
        for start in range(0, len(keys), 300):
            chunk = keys[start:start + 300]
            where = " OR ".join("(t.run_pk = ? AND t.task_id = ? AND t.try_number = ?)"
                                for _ in chunk)
            held |= {(r[0], r[1], r[2]) for r in self.store.conn.execute(
                "SELECT t.run_pk, t.task_id, t.try_number FROM tries t JOIN task_instances i "
                "ON i.run_pk = t.run_pk AND i.task_id = t.task_id WHERE t.runner_id = ? AND "
                "t.end_date IS NULL AND i.try_number = t.try_number AND i.state = 'running' "
                f"AND ({where})" + (" FOR UPDATE OF t" if lock else ""),
                (runner_id, *[v for key in chunk for v in key]))}
        return set(keys) - held

    def open_tries(self, runner_id: int) -> set[TryKey]:
        """The tries the store says this runner is running (not ended, no end said)."""
        return {(r[0], r[1], r[2]) for r in self.store.conn.execute(
            "SELECT run_pk, task_id, try_number FROM tries WHERE runner_id = ? AND "
            "end_date IS NULL AND exited_at IS NULL", (runner_id,))}

    def orphans(self, hostname: str, runner_id: int, since: float) -> list[Orphan]:
        """Tries claimed for other runners' runs by earlier runners of this host (any but
        ``runner_id``, heard from since ``since``): open, or ended by the run's runner."""
        rows = self.store.conn.execute(
            "SELECT t.run_pk, t.task_id, t.try_number, t.runner_id, r.pid, r.pid_start, t.pid, "
            "t.pid_start, t.log_path, t.exit_path, t.end_date IS NOT NULL, "
            "CASE WHEN o.hostname = r.hostname AND o.stopped_at IS NULL THEN o.pid END, "
            "o.pid_start "
            "FROM runners r JOIN tries t ON t.runner_id = r.id JOIN dag_runs d ON "
            "d.id = t.run_pk LEFT JOIN runners o ON o.id = d.runner_id WHERE r.hostname = ? "
            "AND r.id <> ? AND r.heartbeat_at > ? AND t.exited_at IS NULL AND "
            "(d.runner_id IS NULL OR d.runner_id <> t.runner_id) AND "
            "(t.end_date IS NULL OR t.end_date > ?)", (hostname, runner_id, since, since))
        return [Orphan((r[0], r[1], r[2]), *r[3:]) for r in rows]

    def take_over(self, key: TryKey, dead: int, runner_id: int, pid: int | None,
                  pid_start: float | None) -> bool:
        """This runner carries on a try a dead runner of its host claimed (SPEC 10); False
        when the run's runner ended it first."""
        with self.store.transaction() as conn:
            return changes.take_over_try(conn, key, dead, runner_id, pid, pid_start)
