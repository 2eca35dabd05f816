"""The daemon on a driven clock: schedules, catch-up, queued runs and retries reached by moving
time, with the real engine, real processes and a real SQLite file."""
from __future__ import annotations

import datetime as dt
import signal
from pathlib import Path

import pytest

from conftest import write
from flowtui.runner.clock import ManualClock
from flowtui.runner.config import load_config
from flowtui.runner.daemon import Daemon

# A Monday 09:58:30 UTC: two minutes before the 10:00 fire of an hourly schedule.
T0 = dt.datetime(2026, 3, 2, 9, 58, 30, tzinfo=dt.timezone.utc).timestamp()


def _daemon(home: Path, pipelines: Path, clock: ManualClock) -> Daemon:
    return Daemon(load_config(home, pipelines), clock=clock)


@pytest.fixture(autouse=True)
def _woken_in_process():
    """An operator's action wakes the live daemon with SIGUSR1; here that is this process."""
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)
    yield
    signal.signal(signal.SIGUSR1, previous)


def _runs(daemon: Daemon, dag_id: str) -> list:
    return sorted(daemon.store.list_runs(dag_id), key=lambda r: r.logical_date)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=T0)


def test_an_hourly_schedule_fires_at_each_interval_end_and_tick_says_when(
        home: Path, pipelines: Path, clock: ManualClock) -> None:
    write(pipelines, "h.yaml", """
        dag_id: hourly
        schedule: "0 * * * *"
        start_date: 2026-03-02T08:00:00+00:00
        catchup: true
        tasks:
          extract: {command: "echo $FLOWTUI_DS"}
          load: {command: "true", deps: [extract]}
    """)
    daemon = _daemon(home, pipelines, clock)
    try:
        daemon.start()
        daemon.run_until_idle()
        # 08:00-09:00 ended at 09:00: one run; 09:00-10:00 has not ended yet.
        assert [r.run_id for r in _runs(daemon, "hourly")] == ["scheduled__2026-03-02T08:00:00+00:00"]
        assert [r.state for r in _runs(daemon, "hourly")] == ["success"]
        ten = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.timezone.utc).timestamp()
        assert daemon.tick(clock.now()) <= ten  # the next timed work is at 10:00 at the latest
        clock.set(ten + 0.5)
        daemon.tick(clock.now())
        daemon.run_until_idle()
        runs = _runs(daemon, "hourly")
        assert [r.run_id for r in runs] == ["scheduled__2026-03-02T08:00:00+00:00",
                                            "scheduled__2026-03-02T09:00:00+00:00"]
        assert all(r.state == "success" for r in runs)
        # The same instant again creates nothing twice.
        daemon.tick(clock.now())
        daemon.run_until_idle()
        assert len(_runs(daemon, "hourly")) == 2
        # Three hours later with catch-up: each missed interval once, in order.
        clock.set(ten + 3 * 3600 + 1)
        daemon.tick(clock.now())
        daemon.run_until_idle()
        daemon.tick(clock.now())
        daemon.run_until_idle()
        starts = [r.data_interval_start for r in _runs(daemon, "hourly")]
        assert len(starts) == 5 and starts == sorted(set(starts))
        assert all(r.state == "success" for r in _runs(daemon, "hourly"))
    finally:
        daemon.close()


def test_max_active_runs_queues_scheduled_runs_and_starts_them_in_order(
        home: Path, pipelines: Path, clock: ManualClock) -> None:
    write(pipelines, "q.yaml", """
        dag_id: queued
        schedule: "*/10 * * * *"
        start_date: 2026-03-02T09:00:00+00:00
        catchup: true
        max_active_runs: 1
        tasks:
          t: {command: "true"}
    """)
    daemon = _daemon(home, pipelines, clock)
    try:
        daemon.start()  # 09:00-09:10 ... 09:40-09:50 have ended: five runs, one at a time
        runs = _runs(daemon, "queued")
        assert [r.state for r in runs] == ["running"] + ["queued"] * 4
        daemon.run_until_idle()
        assert [r.state for r in _runs(daemon, "queued")] == ["success"] * 5
        ends = [r.end_date for r in _runs(daemon, "queued")]
        starts = [r.start_date for r in _runs(daemon, "queued")]
        assert all(s >= e for s, e in zip(starts[1:], ends))  # never two at once
    finally:
        daemon.close()


def test_a_retry_an_hour_away_comes_when_the_clock_gets_there(
        home: Path, pipelines: Path, tmp_path: Path) -> None:
    flag = tmp_path / "second"
    write(pipelines, "r.yaml", f"""
        dag_id: retried
        tasks:
          t:
            command: '[ -e {flag} ] || {{ touch {flag}; exit 1; }}'
            retries: 1
            retry_delay: 1h
    """)
    clock = ManualClock(start=T0, autojump=True)
    daemon = _daemon(home, pipelines, clock)
    try:
        daemon.start()
        from flowtui.runner import actions

        dag = daemon.dags["retried"]
        run = actions.trigger(daemon.store, dag, logical_date=None, conf={})
        daemon.engine.hook(daemon._on_wake, clock.now())  # what the trigger's wake-up does
        daemon.run_until_idle()
        final = daemon.store.get_run_by_pk(run.pk)
        assert final is not None and final.state == "success"
        attempts = daemon.store.tries(run.pk, "t")
        assert [a.state for a in attempts] == ["failed", "success"]
        gap = attempts[1].start_date - attempts[0].end_date
        assert 3600 <= gap < 3600 + 5, gap
    finally:
        daemon.close()


def test_a_wake_reads_the_dags_with_waiting_runs_not_every_dag(
        home: Path, pipelines: Path, clock: ManualClock) -> None:
    """A trigger wakes the runner: with 300 DAGs it looks at the one with a queued run, in a
    handful of reads, not a few reads a DAG (on PostgreSQL each is a round trip: 1,000 DAGs
    made every trigger, ack and emit cost about a second of the runner's time), and commits
    once before the task's launch (each commit is a round trip of the hand-off)."""
    for n in range(300):
        write(pipelines, f"d{n}.yaml", f"dag_id: d{n}\ntasks:\n  t: {{command: 'true'}}\n")
    daemon = _daemon(home, pipelines, clock)
    try:
        daemon.start()
        daemon.run_until_idle()
        from flowtui.runner import actions

        actions.trigger(daemon.store, daemon.dags["d150"], logical_date=None, conf={})
        statements: list[str] = []
        daemon.store.conn.set_trace_callback(statements.append)
        daemon._on_wake(clock.now())
        daemon.store.conn.set_trace_callback(None)
        assert len(statements) < 60, len(statements)
        # Once the queued run is found, one commit (the claim): the run's move to running
        # rides with its first task's launch.
        found = next(i for i, sql in enumerate(statements) if "DISTINCT dag_id" in sql)
        assert [sql for sql in statements[found:] if sql.strip().upper() == "COMMIT"] == \
            ["COMMIT"], statements[found:]
        daemon.run_until_idle()
        assert [r.state for r in _runs(daemon, "d150")] == ["success"]
    finally:
        daemon.close()


def test_the_runner_reads_a_pipeline_file_as_it_is_written_not_at_its_next_scan(
        home: Path, tmp_path: Path) -> None:
    """The kernel tells the runner of a changed pipelines folder (inotify): an idle runner
    does not stat every pipeline file every few seconds (with 1,000 DAG files that was nearly
    all of its CPU), and still reads a new or edited file at once; a pipelines path that comes
    to name another folder (a deploy swapping a symlink) is noticed at the next look."""
    import threading
    import time

    releases = tmp_path / "releases"
    (releases / "one").mkdir(parents=True)
    (releases / "two").mkdir()
    write(releases / "one", "a.yaml", "dag_id: a\ntasks:\n  t: {command: 'true'}\n")
    write(releases / "two", "b.yaml", "dag_id: b\ntasks:\n  t: {command: 'true'}\n")
    current = tmp_path / "pipelines"
    current.symlink_to(releases / "one")
    daemon = Daemon(load_config(home, current), scan_interval=0.5)
    daemon.start()
    assert daemon.watch is not None
    loop = threading.Thread(target=daemon.engine.run_forever)
    loop.start()

    def wait_for_dags(expected: set[str], what: str) -> None:
        deadline = time.monotonic() + 10
        while set(daemon.dags) != expected:
            assert time.monotonic() < deadline, f"{what}: {sorted(daemon.dags)}"
            time.sleep(0.02)

    try:
        wait_for_dags({"a"}, "the first load")
        swap = tmp_path / "swap"
        swap.symlink_to(releases / "two")
        swap.replace(current)  # atomically: the path now names another folder
        wait_for_dags({"b"}, "the swapped folder read at the next look")
        daemon.scan_interval = 3600.0  # from the next look on, only the watch tells
        time.sleep(0.6)
        write(releases / "two", "c.yaml", "dag_id: c\ntasks:\n  t: {command: 'true'}\n")
        wait_for_dags({"b", "c"}, "a new file read as it is written")
        (releases / "two" / "b.yaml").unlink()
        wait_for_dags({"c"}, "a removed file's DAG gone")
        # A file is read once written and closed, never half-written (an error that is not there)
        import sqlite3

        def errors() -> list:
            conn = sqlite3.connect(home / "flowtui.db")
            try:
                return conn.execute("SELECT fileloc, message FROM import_errors").fetchall()
            finally:
                conn.close()

        with open(releases / "two" / "d.yaml", "w") as half:
            half.write("dag_id: d\n")
            half.flush()
            time.sleep(1.0)  # the runner would have read it by now, were it looking
            assert not errors()
            half.write("tasks:\n  t: {command: 'true'}\n")
        wait_for_dags({"c", "d"}, "a file read once closed")
        assert not errors()
    finally:
        daemon.engine.request_stop()
        loop.join(10)
        daemon.close()
