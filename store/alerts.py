"""Alerts, their deliveries and delivery attempts: every read and write of them."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flowtui.store.models import RUN_COLUMNS, Run

if TYPE_CHECKING:
    from flowtui.store.db import Store

ALERT_COLUMNS = ("id, kind, dag_id, run_id, task_id, state, severity, level, created_at, summary, "
                 "next_step_at, acked_by")


@dataclass(slots=True)
class Alert:
    id: int
    kind: str
    dag_id: str  # '' for an alert about the runner itself
    run_id: str
    task_id: str
    state: str  # open | acked | resolved
    severity: str
    level: int  # escalation steps fired so far
    created_at: float
    summary: str
    next_step_at: float | None
    acked_by: str | None


@dataclass(slots=True)
class Delivery:
    id: int
    alert_id: int
    channel: str
    action: str  # trigger | acknowledge | resolve
    status: str  # pending | sent | failed
    attempts: int
    next_attempt_at: float
    last_status: str


@dataclass(slots=True)
class PendingDelivery:
    """A delivery due to be attempted, with the alert it tells about."""
    id: int
    action: str
    attempts: int
    alert: Alert


class AlertRecords:
    """Writes here run on ``store.conn`` as they are: a caller that needs several of them to
    land together wraps them in ``store.transaction()``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- alerts ----------------------------------------------------------------------------
    def get(self, alert_id: int) -> Alert | None:
        row = self.store.conn.execute(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?",
                                      (alert_id,)).fetchone()
        return Alert(*row) if row else None

    def find(self, kind: str, dag_id: str, run_id: str, task_id: str) -> Alert | None:
        """The one alert of this kind about this DAG, run and task, if any was ever raised."""
        row = self.store.conn.execute(
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE kind = ? AND dag_id = ? AND run_id = ? "
            "AND task_id = ?", (kind, dag_id, run_id, task_id)).fetchone()
        return Alert(*row) if row else None

    def newest(self, *, include_resolved: bool = True, limit: int = 500) -> list[Alert]:
        """Newest first."""
        where = "" if include_resolved else "WHERE state != 'resolved'"
        rows = self.store.conn.execute(
            f"SELECT {ALERT_COLUMNS} FROM alerts {where} ORDER BY id DESC LIMIT ?", (limit,))
        return [Alert(*r) for r in rows]

    def insert(self, kind: str, dag_id: str, run_id: str, task_id: str, severity: str,
               summary: str, now: float) -> int:
        cur = self.store.conn.execute(
            "INSERT INTO alerts (kind, dag_id, run_id, task_id, state, severity, summary, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, 'open', ?, ?, ?, ?)",
            (kind, dag_id, run_id, task_id, severity, summary, now, now))
        return int(cur.lastrowid or 0)

    def reopen(self, alert_id: int, summary: str, now: float) -> None:
        """A resolved alert raised again: open, at level 0, as if new."""
        self.store.conn.execute(
            "UPDATE alerts SET state = 'open', level = 0, summary = ?, created_at = ?, "
            "updated_at = ?, acked_at = NULL, acked_by = NULL, resolved_at = NULL WHERE id = ?",
            (summary, now, now, alert_id))

    def set_level(self, alert_id: int, level: int, next_step_at: float | None,
                  now: float) -> None:
        self.store.conn.execute(
            "UPDATE alerts SET level = ?, next_step_at = ?, updated_at = ? WHERE id = ?",
            (level, next_step_at, now, alert_id))

    def ack(self, alert_id: int, user: str, now: float) -> None:
        self.store.conn.execute(
            "UPDATE alerts SET state = 'acked', acked_at = ?, acked_by = ?, next_step_at = NULL, "
            "updated_at = ? WHERE id = ?", (now, user, now, alert_id))

    def resolve(self, alert_id: int, now: float) -> None:
        self.store.conn.execute(
            "UPDATE alerts SET state = 'resolved', resolved_at = ?, next_step_at = NULL, "
            "updated_at = ? WHERE id = ?", (now, now, alert_id))

    def due_steps(self, now: float) -> list[Alert]:
        """Open alerts whose next escalation step is due by ``now``."""
        rows = self.store.conn.execute(
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE state = 'open' AND next_step_at IS NOT "
            "NULL AND next_step_at <= ?", (now,))
        return [Alert(*r) for r in rows]

    def next_step_at(self) -> float | None:
        """When the earliest next escalation step of an open alert is due (acked and resolved
        alerts have none)."""
        row = self.store.conn.execute(
            "SELECT min(next_step_at) FROM alerts WHERE state = 'open'").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def matching(self, dag_id: str, run_id: str, task_id: str | None, *,
                 kinds: Sequence[str], states: Sequence[str]) -> list[int]:
        """Ids of the alerts about this DAG and run (and task, unless None) of one of ``kinds``
        in one of ``states``."""
        sql = (f"SELECT id FROM alerts WHERE dag_id = ? AND run_id = ? AND state IN "
               f"({_marks(states)}) AND kind IN ({_marks(kinds)})")
        params: list[Any] = [dag_id, run_id, *states, *kinds]
        if task_id is not None:
            sql += " AND task_id = ?"
            params.append(task_id)
        return [r[0] for r in self.store.conn.execute(sql, params)]

    # -- deliveries ------------------------------------------------------------------------
    def enqueue(self, alert_id: int, channel: str, action: str, now: float) -> None:
        """A delivery to send at once."""
        self.store.conn.execute(
            "INSERT INTO deliveries (alert_id, channel, action, status, next_attempt_at, "
            "created_at, updated_at) VALUES (?, ?, ?, 'pending', ?, ?, ?)",
            (alert_id, channel, action, now, now, now))

    def triggered_channels(self, alert_id: int) -> list[str]:
        """The channels this alert was ever triggered on (paged)."""
        rows = self.store.conn.execute(
            "SELECT DISTINCT channel FROM deliveries WHERE alert_id = ? AND action = 'trigger'",
            (alert_id,))
        return [r[0] for r in rows]

    def deliveries(self, alert_id: int) -> list[Delivery]:
        """Oldest first."""
        rows = self.store.conn.execute(
            "SELECT id, alert_id, channel, action, status, attempts, next_attempt_at, "
            "last_status FROM deliveries WHERE alert_id = ? ORDER BY id", (alert_id,))
        return [Delivery(*r) for r in rows]

    def due_channels(self, now: float) -> list[str]:
        """Channels with a pending delivery due by ``now``."""
        rows = self.store.conn.execute(
            "SELECT DISTINCT channel FROM deliveries WHERE status = 'pending' AND "
            "next_attempt_at <= ?", (now,))
        return [r[0] for r in rows]

    def next_attempt_at(self, *, except_channels: Sequence[str] = ()) -> float | None:
        """When the earliest pending delivery of a channel not in ``except_channels`` is due."""
        row = self.store.conn.execute(
            "SELECT min(next_attempt_at) FROM deliveries WHERE status = 'pending' AND channel "
            f"NOT IN ({_marks(except_channels)})", tuple(except_channels)).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def next_due(self, channel: str, now: float,
                 hold_until: float | None = None) -> PendingDelivery | None:
        """The channel's oldest pending delivery due by ``now``, taken for this sender: its
        next attempt moves to ``hold_until`` (compare-and-set), so the sender of a runner on
        another host does not send it too; the attempt's record sets the real next time, and
        a sender that died mid-send leaves it to be tried again at ``hold_until``."""
        columns = ", ".join(f"a.{c.strip()}" for c in ALERT_COLUMNS.split(","))
        for _ in range(20):  # another sender took the one read: read the next
            row = self.store.conn.execute(
                f"SELECT d.id, d.action, d.attempts, d.next_attempt_at, {columns} FROM "
                "deliveries d JOIN alerts a ON a.id = d.alert_id WHERE d.channel = ? AND "
                "d.status = 'pending' AND d.next_attempt_at <= ? ORDER BY d.id LIMIT 1",
                (channel, now)).fetchone()
            if row is None:
                return None
            if hold_until is None:
                break
            with self.store.transaction() as conn:
                taken = conn.execute(
                    "UPDATE deliveries SET next_attempt_at = ? WHERE id = ? AND status = "
                    "'pending' AND next_attempt_at = ?", (hold_until, row[0], row[3])).rowcount
            if taken == 1:
                break
        else:
            return None
        return PendingDelivery(row[0], row[1], row[2], Alert(*row[4:]))

    def record_attempt(self, delivery_id: int, *, ok: bool, detail: str, status: str,
                       attempts: int, next_attempt_at: float, now: float) -> None:
        """One attempt and where it leaves its delivery, in one transaction."""
        with self.store.transaction() as conn:
            conn.execute("INSERT INTO delivery_attempts (delivery_id, at, ok, detail) "
                         "VALUES (?, ?, ?, ?)", (delivery_id, now, int(ok), detail))
            conn.execute("UPDATE deliveries SET status = ?, attempts = ?, last_status = ?, "
                         "next_attempt_at = ?, updated_at = ? WHERE id = ?",
                         (status, attempts, detail, next_attempt_at, now, delivery_id))

    # -- what SLAs are judged on -----------------------------------------------------------
    def typical_durations(self, dag_id: str, limit: int = 20) -> dict[str, float]:
        """The median duration of each task's ``limit`` most recent successful tries."""
        rows = self.store.conn.execute(
            "SELECT t.task_id, t.end_date - t.start_date FROM tries t JOIN dag_runs r ON "
            "r.id = t.run_pk WHERE r.dag_id = ? AND t.state = 'success' ORDER BY t.id DESC "
            "LIMIT ?", (dag_id, limit * 50))
        by_task: dict[str, list[float]] = {}
        for task_id, seconds in rows:
            values = by_task.setdefault(task_id, [])
            if seconds is not None and len(values) < limit:
                values.append(seconds)
        return {t: sorted(v)[len(v) // 2] for t, v in by_task.items() if v}

    def sla_runs(self, ended_since: float, limit: int = 500) -> list[Run]:
        """Unfinished runs and runs that ended since ``ended_since``, newest logical date
        first: the runs whose SLA is shown and checked."""
        rows = self.store.conn.execute(
            f"SELECT {RUN_COLUMNS} FROM dag_runs WHERE state IN ('queued', 'running') OR "
            "end_date >= ? ORDER BY logical_date DESC LIMIT ?", (ended_since, limit))
        return [Run.from_row(r) for r in rows]


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))
