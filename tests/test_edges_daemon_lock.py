"""One daemon per home even without runner.lock; a clean stop leaves flowtui.db complete on its
own; a DAG whose scheduling fails is set aside while the others run."""
from __future__ import annotations

import dataclasses
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from conftest import flowtui, write
from daemon_support import runs, start, trigger, wait_for


def test_a_deleted_lock_file_does_not_let_a_second_daemon_start(home: Path, pipelines: Path,
                                                               runners: list) -> None:
    write(pipelines, "one.yaml", "dag_id: one\ntasks:\n  a: {command: 'true'}\n")
    first = start(runners, home, pipelines)
    (home / "runner.lock").unlink()
    try:
        second = flowtui("runner", home=home, pipelines=pipelines, timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError("a second daemon started beside the first") from None
    assert second.returncode == 2, second.stderr
    assert "a runner is already alive" in second.stderr and "Traceback" not in second.stderr
    assert str(first.proc.pid) in second.stderr
    assert first.proc.poll() is None
    # The first one still works.
    trigger(home, pipelines, "one")
    wait_for(lambda: runs(home, "one") and runs(home, "one")[0]["state"] == "success",
             what="the first daemon to run the DAG")


def _idle_reader(db: Path) -> sqlite3.Connection:
    """What a TUI looks like to the database: a connection that stays open."""
    conn = sqlite3.connect(db)
    conn.execute("SELECT count(*) FROM dag_runs").fetchall()
    return conn


def _runs_in_a_copy_of_the_db_alone(home: Path, tmp_path: Path, dag_id: str) -> list:
    copy = tmp_path / "restored"
    copy.mkdir()
    shutil.copy(home / "flowtui.db", copy / "flowtui.db")
    return [r for r in runs(copy, dag_id) if r["state"] == "success"]


def test_a_clean_daemon_stop_leaves_a_complete_flowtui_db(home: Path, pipelines: Path,
                                                          runners: list, tmp_path: Path) -> None:
    write(pipelines, "one.yaml", "dag_id: one\ntasks:\n  a: {command: 'true'}\n")
    runner = start(runners, home, pipelines)
    reader = _idle_reader(home / "flowtui.db")
    try:
        trigger(home, pipelines, "one")
        wait_for(lambda: runs(home, "one") and runs(home, "one")[0]["state"] == "success",
                 what="the run to succeed")
        runner.stop()
        assert runner.proc.returncode == 0
        assert len(_runs_in_a_copy_of_the_db_alone(home, tmp_path, "one")) == 1
    finally:
        reader.close()


def test_a_foreground_run_leaves_a_complete_flowtui_db(home: Path, pipelines: Path,
                                                       tmp_path: Path) -> None:
    write(pipelines, "one.yaml", "dag_id: one\ntasks:\n  a: {command: 'true'}\n")
    from flowtui.store import Store

    Store.open(home / "flowtui.db").close()  # the database exists for the reader to open
    reader = _idle_reader(home / "flowtui.db")
    try:
        result = flowtui("run", "one", home=home, pipelines=pipelines)
        assert result.returncode == 0, result.stderr
        assert len(_runs_in_a_copy_of_the_db_alone(home, tmp_path, "one")) == 1
    finally:
        reader.close()


def test_a_dag_whose_scheduling_fails_is_set_aside(home: Path, pipelines: Path) -> None:
    from flowtui.runner.config import load_config
    from flowtui.runner.daemon import Daemon

    for name in ("good", "bad"):
        write(pipelines, f"{name}.yaml", f"""
            dag_id: {name}
            schedule: "0 0 * * *"
            tasks:
              a: {{command: 'true'}}
        """)
    daemon = Daemon(load_config(home, pipelines))
    # A CLI writer wakes the live daemon (this process) with SIGUSR1, as serve() expects.
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)
    try:
        now = time.time()
        daemon._reload(now, force=True)
        assert set(daemon.dags) == {"good", "bad"}
        # A spec the loader let through that cannot be scheduled (its zone is gone, say).
        daemon._fire_at.clear()
        daemon.dags["bad"] = dataclasses.replace(daemon.dags["bad"], timezone="No/Such_Zone")
        daemon._on_wake(now)  # one pass over every DAG: it must not stop at the bad one
        assert "bad" not in daemon.dags and "good" in daemon._fire_at
        errors = [e for e in daemon.store.import_errors() if e.fileloc.endswith("bad.yaml")]
        assert len(errors) == 1 and "scheduling failed" in errors[0].message \
            and "No/Such_Zone" in errors[0].message
        # A parse of the folder (here by a CLI command) keeps the runner's error; the DAG stays
        # aside while its file is unchanged, also through a forced reload.
        assert flowtui("trigger", "good", home=home, pipelines=pipelines).returncode == 0
        daemon._reload(time.time(), force=True)
        assert "bad" not in daemon.dags
        assert any(e.fileloc.endswith("bad.yaml") for e in daemon.store.import_errors())
        # Its file changes: it is tried again.
        write(pipelines, "bad.yaml", """
            dag_id: bad
            schedule: "0 1 * * *"
            tasks:
              a: {command: 'true'}
        """)
        daemon._reload(time.time())
        assert "bad" in daemon.dags and "bad" in daemon._fire_at
        assert not any(e.fileloc.endswith("bad.yaml") for e in daemon.store.import_errors())
    finally:
        signal.signal(signal.SIGUSR1, previous)
        daemon.engine.close()
        daemon.store.stop_runner(daemon.runner_id)
        daemon.lock.close()



def test_a_runner_started_right_after_a_kill_9_waits_for_the_dead_one_s_lock(
        home: Path) -> None:
    """The kernel lets go of a killed runner's lock a moment after the process is reaped, not
    always before (20 ms seen here with a folder watch open): a runner started at once after
    a kill -9 waits for it, instead of calling the dead runner alive. A live holder is refused
    at once."""
    import fcntl
    import os
    import threading

    from flowtui.runner.daemon import RunnerError, acquire_lock

    home.mkdir(parents=True, exist_ok=True)
    lingering = open(home / "runner.lock", "a+")  # the dead runner's, not yet let go of
    fcntl.flock(lingering, fcntl.LOCK_EX | fcntl.LOCK_NB)
    lingering.write("999999999")  # a pid no process has
    lingering.flush()
    threading.Timer(0.3, lingering.close).start()
    started = time.monotonic()
    handle = acquire_lock(home)
    assert 0.25 <= time.monotonic() - started < 2.0
    assert (home / "runner.lock").read_text() == str(os.getpid())
    # a live runner holds it (this process, named in the file): refused at once
    started = time.monotonic()
    try:
        acquire_lock(home)
    except RunnerError as exc:
        assert "already alive" in str(exc) and str(os.getpid()) in str(exc)
    else:
        raise AssertionError("a second lock was granted")
    assert time.monotonic() - started < 0.2
    handle.close()
