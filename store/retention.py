"""What a long-lived home lets go: finished runs nothing has touched for a while, with their task
instances, tries and events (the audit log only when asked). Each call is one short
transaction over a batch, so a clean never holds the write lock for long."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flowtui.store.changes import EVENT

if TYPE_CHECKING:
    from flowtui.store.db import Store

# A run is old when it ended, and nothing about it changed, before the cutoff; it is never one
# with a try still open or an operator's request still waiting (the request would vanish with
# it) or an alert nobody resolved yet (it stays on the screen until someone does), nor a DAG's
# newest scheduled run: the schedule carries on from it, and without it a
# runner would schedule the DAG's history again (catch-up from start_date, a yearly DAG's year).
_OLD = """
    FROM dag_runs r
    WHERE r.updated_at < :cutoff AND r.state IN ('success', 'failed')
      AND r.end_date IS NOT NULL AND r.end_date < :cutoff
      AND NOT EXISTS (SELECT 1 FROM tries t WHERE t.run_pk = r.id AND t.end_date IS NULL)
      AND NOT EXISTS (SELECT 1 FROM requests q WHERE q.run_pk = r.id AND q.done_at IS NULL)
      AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.dag_id = r.dag_id AND a.run_id = r.run_id
                      AND a.state <> 'resolved')
      AND NOT (r.run_type = 'scheduled' AND r.logical_date >= (
          SELECT max(s.logical_date) FROM dag_runs s
          WHERE s.dag_id = r.dag_id AND s.run_type = 'scheduled'))
"""


@dataclass(slots=True)
class OldRun:
    pk: int
    dag_id: str
    run_id: str
    state: str
    end_date: float


@dataclass(slots=True)
class Removed:
    """What one batch took out of the store; ``files`` are the removed tries' logs and exit
    files, for the caller to delete once the batch is committed."""
    runs: int = 0
    tries: int = 0
    events: int = 0
    alerts: int = 0
    audit: int = 0
    files: list[str] = field(default_factory=list)


# Dataset events older than the cutoff go, except each dataset's newest (its age and freshness
# stay known, and event ids never go back: a consumer's watermark is an event id). A consumer's
# trigger rows for a partition go once no event for that partition is left (so nothing old
# looks new again); for ``match: any`` the newest row per consumer is its watermark and stays.
_OLD_DATASET_EVENTS = """
    FROM dataset_events e
    WHERE e.at < :cutoff
      AND e.id < (SELECT max(n.id) FROM dataset_events n WHERE n.dataset = e.dataset)
"""
_OLD_TRIGGERS = """
    FROM dataset_triggers t
    WHERE t.at < :cutoff AND (
      (t.partition <> '*' AND NOT EXISTS (
          SELECT 1 FROM dataset_events e WHERE e.dataset = t.dataset
          AND e.partition = t.partition))
      OR (t.partition = '*' AND t.event_id < (
          SELECT max(w.event_id) FROM dataset_triggers w
          WHERE w.consumer = t.consumer AND w.partition = '*')))
"""


class RetentionRecords:
    def __init__(self, store: Store) -> None:
        self.store = store

    def old_runs(self, cutoff: float, limit: int | None = None) -> list[OldRun]:
        """The runs a clean at ``cutoff`` removes, oldest first."""
        sql = (f"SELECT r.id, r.dag_id, r.run_id, r.state, r.end_date {_OLD} "
               "ORDER BY r.updated_at, r.id")
        params: dict[str, object] = {"cutoff": cutoff}
        if limit is not None:
            sql += " LIMIT :limit"
            params["limit"] = limit
        return [OldRun(*row) for row in self.store.conn.execute(sql, params)]

    def counts(self, runs: list[OldRun]) -> tuple[int, int]:
        """How many tries and events those runs hold (what a dry run reports)."""
        conn = self.store.conn
        tries = events = 0
        for run in runs:
            tries += conn.execute("SELECT count(*) FROM tries WHERE run_pk = ?",
                                  (run.pk,)).fetchone()[0]
            events += conn.execute("SELECT count(*) FROM events WHERE dag_id = ? AND run_id = ?",
                                   (run.dag_id, run.run_id)).fetchone()[0]
        return tries, events

    def removed_and_gone(self, dag_id: str, run_ids: Sequence[str]) -> set[str]:
        """Which of these runs of ``dag_id`` a clean removed (on any host sharing the store),
        and that no run of the same id has come back since: only their log folders may go."""
        gone: set[str] = set()
        for start in range(0, len(run_ids), 500):
            chunk = list(run_ids[start:start + 500])
            marks = ",".join("?" * len(chunk))
            gone.update(row[0] for row in self.store.conn.execute(
                f"SELECT x.run_id FROM removed_runs x WHERE x.dag_id = ? AND x.run_id IN "
                f"({marks}) AND NOT EXISTS (SELECT 1 FROM dag_runs r WHERE r.dag_id = x.dag_id "
                "AND r.run_id = x.run_id)", (dag_id, *chunk)))
        return gone

    def forget_removed(self, before: float, limit: int) -> int:
        """Forget up to ``limit`` runs removed before ``before`` (their logs on a host that
        was away that long stay there)."""
        with self.store.transaction() as conn:
            return conn.execute(
                "DELETE FROM removed_runs WHERE (dag_id, run_id) IN (SELECT dag_id, run_id "
                "FROM removed_runs WHERE removed_at < ? LIMIT ?)", (before, limit)).rowcount

    def log_files(self, runs: list[OldRun]) -> list[str]:
        conn = self.store.conn
        files: list[str] = []
        for run in runs:
            for log_path, exit_path in conn.execute(
                    "SELECT log_path, exit_path FROM tries WHERE run_pk = ?", (run.pk,)):
                files += [log_path, exit_path]
        return files

    def remove_batch(self, cutoff: float, limit: int, actor: str = "") -> Removed:
        """Remove up to ``limit`` old runs (oldest first) in one transaction: their task
        instances, tries and requests go by cascade, their events here."""
        removed = Removed()
        with self.store.transaction() as conn:
            rows = conn.execute(f"SELECT r.id, r.dag_id, r.run_id {_OLD} "
                                "ORDER BY r.updated_at, r.id LIMIT :limit",
                                {"cutoff": cutoff, "limit": limit}).fetchall()
            for pk, dag_id, run_id in rows:
                for log_path, exit_path in conn.execute(
                        "SELECT log_path, exit_path FROM tries WHERE run_pk = ?", (pk,)):
                    removed.tries += 1
                    removed.files += [log_path, exit_path]
                removed.events += conn.execute(
                    "DELETE FROM events WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)).rowcount
                removed.alerts += conn.execute(  # resolved ones only (see _OLD)
                    "DELETE FROM alerts WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)).rowcount
            conn.executemany("DELETE FROM dag_runs WHERE id = ?", [(row[0],) for row in rows])
            if self.store.kind == "postgresql":
                # other hosts remove their logs of these runs (SPEC 10): nobody reaches them here
                conn.executemany("INSERT OR IGNORE INTO removed_runs (dag_id, run_id, removed_at) "
                                 "VALUES (?, ?, ?)",
                                 [(d, r, self.store.now()) for _, d, r in rows])
            removed.runs = len(rows)
            if rows:  # readers refetch when the newest event moves: a removal is news to them
                conn.execute(EVENT, (self.store.now(), "retention", "", "", None, None, None,
                                     "removed", "retention", actor,
                                     f"{len(rows)} finished runs older than the cutoff"))
        return removed

    def old_dataset_rows(self, cutoff: float) -> tuple[int, int]:
        """How many dataset events and consumer trigger rows a clean at ``cutoff`` removes
        (triggers counted as of now: more go once their partitions' events have gone)."""
        conn = self.store.conn
        return (conn.execute(f"SELECT count(*) {_OLD_DATASET_EVENTS}",
                             {"cutoff": cutoff}).fetchone()[0],
                conn.execute(f"SELECT count(*) {_OLD_TRIGGERS}",
                             {"cutoff": cutoff}).fetchone()[0])

    def remove_dataset_batch(self, cutoff: float, limit: int) -> tuple[int, int]:
        """Up to ``limit`` old dataset events, then the trigger rows nothing needs any more."""
        with self.store.transaction() as conn:
            touched = conn.execute(
                f"DELETE FROM dataset_events WHERE id IN (SELECT e.id {_OLD_DATASET_EVENTS} "
                "ORDER BY e.id LIMIT :limit) RETURNING dataset",
                {"cutoff": cutoff, "limit": limit}).fetchall()
            events = len(touched)
            conn.executemany(  # each dataset's newest stays, so only the counts change
                "UPDATE dataset_stats SET events = (SELECT count(*) FROM dataset_events "
                "WHERE dataset = :d), partitions = (SELECT count(DISTINCT partition) FROM "
                "dataset_events WHERE dataset = :d) WHERE dataset = :d",
                [{"d": name} for name in {row[0] for row in touched}])
            if events == limit:
                return events, 0
            triggers = conn.execute(
                "DELETE FROM dataset_triggers WHERE (consumer, dataset, event_id) IN (SELECT "
                f"t.consumer, t.dataset, t.event_id {_OLD_TRIGGERS} LIMIT :limit)",
                {"cutoff": cutoff, "limit": limit}).rowcount
            return events, triggers

    def old_audit(self, cutoff: float) -> int:
        return self.store.conn.execute("SELECT count(*) FROM audit_log WHERE at < ?",
                                       (cutoff,)).fetchone()[0]

    def remove_audit_batch(self, cutoff: float, limit: int) -> int:
        with self.store.transaction() as conn:
            return conn.execute("DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log "
                                "WHERE at < ? ORDER BY id LIMIT ?)", (cutoff, limit)).rowcount
