"""``flowtui db migrate --to postgresql://…`` (SPEC 10): a SQLite home's whole history copied
into an empty PostgreSQL store, ids kept (so every reference between rows holds), in one
transaction: the target has all of it or nothing."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowtui.store.db import Store

# Parents before children (foreign keys); the rows of each in the order SQLite wrote them.
TABLES = ("dags", "import_errors", "runners", "events", "audit_log", "backfills", "dag_runs",
          "task_instances", "tries", "requests", "alerts", "deliveries", "delivery_attempts",
          "dataset_events", "dataset_consumers", "dataset_triggers", "dataset_stats",
          "log_chunks", "removed_runs")
BATCH = 5000


class MigrateError(Exception):
    """The copy cannot start; nothing was written."""


def copy_home(source: Store, target: Store,
              progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Copy every table of ``source`` (SQLite) into ``target`` (PostgreSQL, empty); the rows
    copied per table."""
    if target.kind != "postgresql" or source.kind != "sqlite":
        raise MigrateError("copies a SQLite home into PostgreSQL")
    held = target.conn.execute("SELECT (SELECT count(*) FROM dag_runs) + "
                               "(SELECT count(*) FROM runners) + (SELECT count(*) FROM dags)"
                               ).fetchone()[0]
    if held:
        raise MigrateError(f"{target.path} already holds flowtui history; copy into an empty "
                           "database (createdb a new one)")
    copied: dict[str, int] = {}
    raw = target.conn.raw  # COPY, the server's bulk path, under the store's write lock
    with target.transaction():
        for table in TABLES:
            columns = [r[1] for r in source.conn.execute(f"PRAGMA table_info({table})")]
            wanted = {r[0] for r in target.conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
                (table,))}
            names = [c for c in columns if c in wanted]
            quoted = ", ".join(f'"{c}"' for c in names)
            count = 0
            rows = source.conn.execute(f"SELECT {quoted} FROM {table} ORDER BY rowid")
            with raw.cursor().copy(f"COPY {table} ({quoted}) FROM STDIN") as copy:
                while True:
                    batch = rows.fetchmany(BATCH)
                    if not batch:
                        break
                    for row in batch:
                        copy.write_row(row)
                    count += len(batch)
            if "id" in names:  # new rows continue after the copied ids
                target.conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)")
            copied[table] = count
            if progress is not None:
                progress(table, count)
        target.audit(target.conn, "db migrate", detail={"from": str(source.path),
                                                          "rows": copied})
    return copied
