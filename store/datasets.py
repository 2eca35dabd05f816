"""Datasets (SPEC 9): the events that say a partition was written, and which of them each
consumer's runs have taken. A consumer run and the trigger rows naming the events it consumes
are written in one transaction, after checking again inside it that those events are still
unconsumed: an event is consumed once per consumer however many runners look at once."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flowtui.store.changes import Changes
from flowtui.store.models import Run

if TYPE_CHECKING:
    from flowtui.store.db import Store

ANY = "*"  # the partition a `match: any` consumer records what it took under


@dataclass(slots=True)
class DatasetEvent:
    id: int
    dataset: str
    partition: str
    at: float
    source: str
    dag_id: str | None
    run_id: str | None
    task_id: str | None
    try_number: int | None
    actor: str
    metadata: dict[str, Any]


EVENT_COLUMNS = ("id, dataset, partition, at, source, dag_id, run_id, task_id, try_number, "
                 "actor, metadata")

_NEWEST = (", ".join("e." + c for c in EVENT_COLUMNS.split(", ")) +
           " FROM dataset_stats s JOIN dataset_events e ON e.id = s.newest_id")


def _event(row: Sequence[Any]) -> DatasetEvent:
    meta = row[10]
    return DatasetEvent(*row[:10], json.loads(meta) if meta and meta != "{}" else {})


@dataclass(slots=True)
class Readiness:
    """A consumer's unconsumed events: partitions every dataset has reached (``ready``: the
    newest event id per dataset), and partitions still missing some (``waiting``: the datasets
    they wait for)."""
    ready: dict[str, dict[str, int]] = field(default_factory=dict)
    waiting: dict[str, list[str]] = field(default_factory=dict)


@dataclass(slots=True)
class DatasetSummary:
    name: str
    events: int
    newest: DatasetEvent | None
    partitions: int


class DatasetRecords:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- writes ----------------------------------------------------------------------------
    def register_consumers(self, consumers: Mapping[str, Sequence[str]]) -> None:
        """A consumer first seen takes events from now on (not the whole history)."""
        with self.store.transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO dataset_consumers (consumer, since_id) VALUES "
                "(?, (SELECT coalesce(max(id), 0) FROM dataset_events))",
                [(name,) for name in consumers])

    def emit(self, dataset: str, partition: str, metadata: dict[str, Any], user: str) -> int:
        """``flowtui datasets emit``: an event from outside, audited."""
        changes = Changes()
        now = self.store.now()
        changes.dataset_event(dataset, partition, now, source="emit", actor=user,
                              metadata=metadata)
        with self.store.transaction() as conn:
            self.store.write(conn, changes)
            event_id = conn.execute("SELECT max(id) FROM dataset_events").fetchone()[0]
            self.store.audit(conn, "datasets emit", detail={
                "dataset": dataset, "partition": partition, "metadata": metadata}, user=user)
        return int(event_id)

    def create_consumer_run(self, consumer: str, match: str, partition: str,
                            events: Mapping[str, int], **run: Any) -> Run | None:
        """Create the run that consumes ``events`` (dataset -> newest event id taken), or
        nothing when another runner took them first."""
        key = ANY if match == "any" else partition
        with self.store.transaction() as conn:
            last = conn.execute(
                "SELECT max(event_id) FROM dataset_triggers WHERE consumer = ? AND partition = ?",
                (consumer, key)).fetchone()[0]
            if last is not None and max(events.values()) <= last:
                return None  # another runner took these events first
            events = {d: e for d, e in events.items() if last is None or e > last}
            created = self.store.insert_run(conn, dag_id=consumer, unique=True,
                                            at=self.store.now(), partition=partition, **run)
            conn.executemany(
                "INSERT INTO dataset_triggers (consumer, dataset, partition, event_id, run_pk, "
                "at) VALUES (?, ?, ?, ?, ?, ?)",
                [(consumer, dataset, key, event_id, created.pk, self.store.now())
                 for dataset, event_id in events.items()])
            return created

    # -- reads -----------------------------------------------------------------------------
    def readiness(self, consumer: str, datasets: Sequence[str], match: str) -> Readiness:
        conn = self.store.conn
        row = conn.execute("SELECT since_id FROM dataset_consumers WHERE consumer = ?",
                           (consumer,)).fetchone()
        if row is None:
            return Readiness()
        since = row[0]
        found = Readiness()
        if match == "any":
            newest: dict[str, int] = {}
            last = conn.execute("SELECT coalesce(max(event_id), 0) FROM dataset_triggers WHERE "
                                "consumer = ? AND partition = ?", (consumer, ANY)).fetchone()[0]
            for dataset in datasets:  # any event newer than the newest the last run took
                got = conn.execute(
                    "SELECT max(id) FROM dataset_events WHERE dataset = ? AND id > ? AND id > ?",
                    (dataset, since, last)).fetchone()[0]
                if got is not None:
                    newest[dataset] = got
            if newest:
                top = max(newest.values())
                partition = conn.execute("SELECT partition FROM dataset_events WHERE id = ?",
                                         (top,)).fetchone()[0]
                found.ready[partition] = newest
            return found
        # A partition runs once every dataset has an event for it, and again whenever an event
        # for it arrives after the newest one its last run took (a producer re-run; a dataset
        # added to the schedule later brings no old event back).
        taken = dict(conn.execute("SELECT partition, max(event_id) FROM dataset_triggers WHERE "
                                  "consumer = ? GROUP BY partition", (consumer,)).fetchall())
        newest: dict[str, dict[str, int]] = {}
        fresh: set[str] = set()
        for dataset in datasets:
            for partition, event_id in conn.execute(
                    "SELECT partition, max(id) FROM dataset_events WHERE dataset = ? AND id > ? "
                    "GROUP BY partition", (dataset, since)):
                newest.setdefault(partition, {})[dataset] = event_id
                if partition not in taken or event_id > taken[partition]:
                    fresh.add(partition)
        for partition in sorted(fresh):
            got = newest[partition]
            if len(got) == len(datasets):
                found.ready[partition] = got
            else:
                found.waiting[partition] = [d for d in datasets if d not in got]
        return found

    def newest_at(self, dataset: str) -> float | None:
        return self.store.conn.execute("SELECT max(at) FROM dataset_events WHERE dataset = ?",
                                       (dataset,)).fetchone()[0]

    def events(self, dataset: str | None = None, limit: int = 100) -> list[DatasetEvent]:
        where, params = ("WHERE dataset = ?", (dataset,)) if dataset else ("", ())
        rows = self.store.conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM dataset_events {where} ORDER BY id DESC LIMIT ?",
            (*params, limit))
        return [_event(r) for r in rows]

    def names(self) -> list[str]:
        """Every dataset that has an event."""
        return [r[0] for r in self.store.conn.execute("SELECT dataset FROM dataset_stats")]

    def summaries(self, names: Sequence[str] | None = None) -> list[DatasetSummary]:
        """Counts and newest event of every dataset, or of those ``names`` that have events,
        from ``dataset_stats`` (one row each, not every event)."""
        if names is None:
            rows = self.store.conn.execute(
                f"SELECT s.events, s.partitions, {_NEWEST} ORDER BY s.dataset").fetchall()
        else:
            rows = []
            for start in range(0, len(names), 500):
                chunk = list(names[start:start + 500])
                rows += self.store.conn.execute(
                    f"SELECT s.events, s.partitions, {_NEWEST} WHERE s.dataset IN "
                    f"({', '.join('?' * len(chunk))})", chunk).fetchall()
        return [DatasetSummary(row[3], row[0], _event(row[2:]), row[1]) for row in rows]

    def newest_rows(self) -> list[tuple[str, int, int, str, float]]:
        """(dataset, events, partitions, newest partition, its time) of every dataset with
        events: what `datasets list` prints, read as plain rows."""
        return self.store.conn.execute(
            "SELECT s.dataset, s.events, s.partitions, e.partition, e.at FROM dataset_stats s "
            "JOIN dataset_events e ON e.id = s.newest_id").fetchall()

    def summary(self, name: str) -> DatasetSummary:
        row = self.store.conn.execute(
            f"SELECT s.events, s.partitions, {_NEWEST} WHERE s.dataset = ?", (name,)).fetchone()
        if row is None:
            return DatasetSummary(name, 0, None, 0)
        return DatasetSummary(name, row[0], _event(row[2:]), row[1])

    def consumer_runs(self, dataset: str, limit: int = 20) -> list[tuple[str, str, int]]:
        """(consumer, partition, run_pk) of the newest runs that consumed this dataset."""
        return self.store.conn.execute(
            "SELECT consumer, partition, run_pk FROM dataset_triggers WHERE dataset = ? "
            "ORDER BY event_id DESC LIMIT ?", (dataset, limit)).fetchall()
