"""Regression tests: each pins a bug found in review, with the scenario that showed it."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from conftest import flowtui, write
from daemon_support import Runner, wait_for


def query(home: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(home / "flowtui.db")
    rows = conn.execute(sql).fetchall()
    conn.close()
    return rows


def test_queued_runs_are_taken_once_at_startup(home: Path, pipelines: Path) -> None:
    # Startup and the first wake both start queued runs: each run must be adopted once.
    start = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 3 * 86400))
    write(pipelines, "d.yaml", f"""
        dag_id: d
        schedule: "@daily"
        start_date: {start}
        catchup: true
        max_active_runs: 3
        tasks:
          t: {{command: 'true'}}
    """)
    write(pipelines, "b.yaml", "dag_id: b\nschedule: '@daily'\ntasks:\n  t: {command: 'true'}\n")
    assert flowtui("backfill", "b", "--start", "2026-02-01", "--end", "2026-02-02",
                   "--parallelism", "4", home=home, pipelines=pipelines).returncode == 0
    runner = Runner(home, pipelines)
    try:
        wait_for(lambda: query(home, "SELECT count(*) FROM dag_runs WHERE state = 'success'")[0][0]
                 >= 5, 20, "the runs")
        assert runner.proc.poll() is None  # still alive
        assert query(home, "SELECT max(try_number) FROM tries") == [(1,)]
    finally:
        runner.stop()


def test_clear_during_a_timed_out_runs_kill_grace(home: Path, pipelines: Path) -> None:
    write(pipelines, "t.yaml", """
        dag_id: t
        dagrun_timeout: 0.5s
        tasks:
          a: {command: "trap '' TERM; [ \\"$FLOWTUI_TRY_NUMBER\\" -ge 2 ] || sleep 30", kill_grace: 3s}
          b: {command: 'true', deps: [a]}
    """)
    runner = Runner(home, pipelines)
    try:
        flowtui("trigger", "t", home=home, pipelines=pipelines)
        # Past the timeout (b is skipped at once), inside a's 3 s grace (it ignores SIGTERM).
        wait_for(lambda: ("b", "skipped") in query(home, "SELECT task_id, state FROM "
                                                     "task_instances"), 10, "the dagrun_timeout")
        assert ("a", "running") in query(home, "SELECT task_id, state FROM task_instances")
        assert flowtui("clear", "t", "latest", "--yes", home=home,
                       pipelines=pipelines).returncode == 0
        wait_for(lambda: query(home, "SELECT state FROM dag_runs") == [("success",)], 20,
                 "the cleared run to run again and finish")
    finally:
        runner.stop()


def test_a_log_folder_that_cannot_be_made_fails_the_try(home: Path, pipelines: Path) -> None:
    write(pipelines, "c.yaml", "dag_id: c\ntasks:\n  t: {command: 'true'}\n")
    (home / "logs").write_text("not a folder")
    result = flowtui("run", "c", home=home, pipelines=pipelines)
    assert result.returncode == 1 and "Traceback" not in result.stderr + result.stdout
    state, reason = query(home, "SELECT state, reason FROM task_instances")[0]
    assert state == "failed" and "could not start the task" in reason
