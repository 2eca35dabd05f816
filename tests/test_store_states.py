"""States enter the store through one door: the transition functions check each move, the
schema refuses unknown states, and an older home keeps its history through the upgrade."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from flowtui.store import RunState, Store, TaskState, TransitionError
from flowtui.store.changes import Changes
from flowtui.store.schema import migrations
from flowtui.store.version import MIGRATION_SET


def _run(store: Store, state: RunState = RunState.RUNNING):
    return store.create_run(dag_id="d", run_id="r", run_type="manual", logical_date=0.0,
                            data_interval_start=0.0, data_interval_end=0.0, conf={},
                            state=state, runner_id=None,
                            tasks=[("a", 1, "default", 1, 1), ("b", 1, "default", 1, 1)])


def test_a_task_move_is_checked_and_written_with_its_event(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "flowtui.db", now=lambda: 1000.0)
    run = _run(store)
    changes = Changes()
    changes.move_task(run.pk, "d", "r", "a", TaskState.NONE, TaskState.RUNNING, at=1001.0,
                      cause="scheduler", actor="runner 7", attempt=1, try_number=1)
    store.apply(changes)
    ti = {t.task_id: t for t in store.task_instances(run.pk)}["a"]
    assert ti.state is TaskState.RUNNING and ti.try_number == 1
    event = store.events(run_id="r")[-1]
    assert (event.old_state, event.new_state, event.cause, event.at) == \
        ("none", "running", "scheduler", 1001.0)
    assert store.conn.execute("SELECT actor FROM events WHERE id = ?",
                              (event.id,)).fetchone()[0] == "runner 7"
    with pytest.raises(TransitionError):  # a finished task does not run again by itself
        Changes().move_task(run.pk, "d", "r", "a", TaskState.SUCCESS, TaskState.RUNNING,
                            at=1002.0, cause="scheduler", actor="runner 7")
    Changes().move_task(run.pk, "d", "r", "a", TaskState.SUCCESS, TaskState.NONE, at=1002.0,
                        cause="operator", actor="alice", operator=True)  # a clear may
    with pytest.raises(ValueError, match="cannot set"):  # only named columns, never SQL
        Changes().move_task(run.pk, "d", "r", "a", TaskState.NONE, TaskState.RUNNING,
                            at=1002.0, cause="scheduler", actor="x", **{"state = 'x', pid": 1})


def test_the_schema_refuses_a_state_it_does_not_know(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "flowtui.db")
    run = _run(store)
    for sql in ("UPDATE task_instances SET state = 'done'",
                "UPDATE dag_runs SET state = 'finished'",
                f"INSERT INTO tries (run_pk, task_id, try_number, state, start_date, log_path, "
                f"exit_path) VALUES ({run.pk}, 'a', 1, 'ok', 0, '', '')"):
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            store.conn.execute(sql)


def test_an_older_home_keeps_its_history_through_the_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "flowtui.db"
    old = sqlite3.connect(path)
    # The migrations table as releases that migrated with sqlite-utils made it, word for word.
    old.execute('CREATE TABLE "_sqlite_migrations" (\n   "id" INTEGER PRIMARY KEY,\n'
                '   "migration_set" TEXT,\n   "name" TEXT,\n   "applied_at" TEXT\n)')
    old.execute('CREATE UNIQUE INDEX "idx__sqlite_migrations_migration_set_name"\n'
                '    ON "_sqlite_migrations" ("migration_set", "name")')
    migrations.apply(old, stop_before="0006_one_door")  # a home as the previous release left it
    old.execute("INSERT INTO dag_runs (id, dag_id, run_id, run_type, logical_date, "
                "data_interval_start, data_interval_end, state, created_at, updated_at) "
                "VALUES (1, 'd', 'r', 'manual', 0, 0, 0, 'failed', 0, 0)")
    old.execute("INSERT INTO task_instances (run_pk, dag_id, run_id, task_id, state, updated_at) "
                "VALUES (1, 'd', 'r', 'a', 'failed', 0)")
    old.execute("INSERT INTO tries (run_pk, task_id, try_number, state, start_date, log_path, "
                "exit_path) VALUES (1, 'a', 1, 'failed', 0, 'a.log', 'a.exit')")
    old.commit()
    old.close()

    store = Store.open(path)
    applied = {r[0] for r in store.conn.execute(
        "SELECT name FROM _sqlite_migrations WHERE migration_set = ?", (MIGRATION_SET,))}
    assert {"0006_one_door", "0007_state_checks"} <= applied
    run = store.get_run("d", "r")
    assert run is not None and run.state is RunState.FAILED
    assert [t.state for t in store.task_instances(1)] == [TaskState.FAILED]
    assert [t.log_path for t in store.tries(1)] == ["a.log"]
    assert store.conn.execute("PRAGMA foreign_key_check").fetchall() == []
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        store.conn.execute("UPDATE task_instances SET state = 'done'")
    # Its indexes came back, and deleting a run still takes its tasks and tries with it.
    indexes = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE "
                                                 "type = 'index'")}
    assert {"task_instances_state", "dag_runs_dag_date", "dag_runs_backfill"} <= indexes
    with store.transaction() as conn:
        conn.execute("DELETE FROM dag_runs WHERE id = 1")
    assert store.task_instances(1) == [] and store.tries(1) == []


def _wal_frames(db: Path) -> tuple[int, int]:
    """(frames in the write-ahead log, frames of it copied into the database), as SQLite's
    shared index (the -shm file) holds them: mxFrame in its header, nBackfill after it."""
    import struct

    data = (db.parent / f"{db.name}-shm").read_bytes()[:100]
    return struct.unpack_from("=I", data, 16)[0], struct.unpack_from("=I", data, 96)[0]


def test_an_engine_s_commits_leave_copying_the_log_to_a_thread(tmp_path: Path) -> None:
    """The commit that takes the write-ahead log past 1,000 pages copies it into the database
    file (10-25 ms on a slow disk, once every hundred tasks, while the next task waits): with
    an engine's store, a thread copies it every few dozen commits instead, so that commit finds
    little left to copy; and the thread ends with ``checkpoint_inline`` (the engine's close)."""
    import threading
    import time

    from flowtui.store import db

    path = tmp_path / "flowtui.db"
    store = Store.open(path)
    runner = store.register_runner("run")
    assert store.checkpoint()  # the log starts empty
    store.checkpoint_aside()
    for i in range(db.CHECKPOINT_EVERY):
        changes = Changes()
        changes.heartbeat(runner, 1000.0 + i, tries=False)
        store.apply(changes)
    frames, copied = _wal_frames(path)
    assert 0 < frames < 1000  # SQLite's own checkpoint has not come
    deadline = time.monotonic() + 10
    while copied < frames:
        assert time.monotonic() < deadline, f"{copied} of {frames} frames copied"
        time.sleep(0.01)
        frames, copied = _wal_frames(path)
    store.checkpoint_inline()
    assert not [t for t in threading.enumerate() if t.name == "flowtui-checkpoint"]
    store.close()
