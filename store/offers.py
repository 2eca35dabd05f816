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
              queues: Iterable[str] | None, limit: int,
              pool_size: Callable[[str], float | None],
              paths: Callable[[str, str, str, int], tuple[str, str]]) -> list[Claimed]:
        """Claim up to ``limit`` offered tasks for this runner (``changes.claim_offers``),
        within each pool's room across every host."""
        store = self.store
        with store.launch_lock(), store.transaction() as conn:
            used = dict(conn.execute(
                "SELECT pool, sum(pool_slots) FROM task_instances WHERE state = 'running' "
                "GROUP BY pool").fetchall())

            def fits(pool: str, slots: int) -> bool:
                size = pool_size(pool)
                if size is None or int(used.get(pool) or 0) + slots > size:
                    return False
                used[pool] = int(used.get(pool) or 0) + slots
                return True

            rows = changes.claim_offers(
                conn, runner_id, at=store.now(), actor=actor, dag_ids=dag_ids,
                queues=None if queues is None else sorted(queues), limit=limit, fits=fits,
                paths=paths)
        return [Claimed(*row) for row in rows]

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
            "r.hostname, r.heartbeat_at, r.lease, r.stopped_at, t.pid, t.pid_start "
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
