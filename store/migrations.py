"""Forward migrations of the SQLite schema: named steps applied once each, in order, recorded in
``_sqlite_migrations`` (the table and columns sqlite-utils' ``Migrations`` used, so a home made
by an earlier release upgrades in place).

The caller owns the transaction (``Store._migrate`` holds the write lock around ``apply``): every
step and its record commit together or not at all.
"""
from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass

TABLE = "_sqlite_migrations"
_ENSURE = (
    f'CREATE TABLE IF NOT EXISTS "{TABLE}" ("id" INTEGER PRIMARY KEY, "migration_set" TEXT, '
    '"name" TEXT, "applied_at" TEXT)',
    f'CREATE UNIQUE INDEX IF NOT EXISTS "idx_{TABLE}_migration_set_name" ON "{TABLE}" '
    '("migration_set", "name")',
)

Step = Callable[[sqlite3.Connection], None]


@dataclass(frozen=True, slots=True)
class Migration:
    name: str
    fn: Step


class Migrations:
    """A set of migrations, registered with ``@migrations(name=...)`` in the order they run."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._migrations: list[Migration] = []

    def __call__(self, *, name: str) -> Callable[[Step], Step]:
        def register(fn: Step) -> Step:
            if any(m.name == name for m in self._migrations):
                raise ValueError(f"migration {name!r} is registered twice")
            self._migrations.append(Migration(name, fn))
            return fn

        return register

    def applied(self, conn: sqlite3.Connection) -> set[str]:
        try:
            return {row[0] for row in conn.execute(
                f'SELECT name FROM "{TABLE}" WHERE migration_set = ?', (self.name,))}
        except sqlite3.OperationalError:  # no table yet: a new database
            return set()

    def apply(self, conn: sqlite3.Connection, *, stop_before: str | Iterable[str] = ()) -> None:
        """Run the steps not applied yet, in order, each followed by its record; with
        ``stop_before``, stop at the first of those names (an older release's schema)."""
        stop = {stop_before} if isinstance(stop_before, str) else set(stop_before)
        done = self.applied(conn)
        for statement in _ENSURE:
            conn.execute(statement)
        for migration in self._migrations:
            if migration.name in stop:
                return
            if migration.name in done:
                continue
            migration.fn(conn)
            conn.execute(f'INSERT INTO "{TABLE}" (migration_set, name, applied_at) '
                         "VALUES (?, ?, ?)",
                         (self.name, migration.name, str(dt.datetime.now(dt.timezone.utc))))
