"""A no-op mark changes nothing but the audit log; a mark of an ended task keeps its times."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from conftest import flowtui, write
from daemon_support import start, trigger, wait_for
from helpers import run_dag

PIPE = """
dag_id: quick
tasks:
  t: {command: 'echo done'}
  after: {command: 'echo after', deps: [t]}
"""


def rows(home: Path, sql: str, *args: object) -> list[tuple]:
    conn = sqlite3.connect(home / "flowtui.db")
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def timing(home: Path) -> tuple:
    return rows(home, "SELECT state, start_date, end_date FROM task_instances "
                      "WHERE task_id = 't' ORDER BY run_pk DESC LIMIT 1")[0]


def run_end(home: Path) -> float:
    return rows(home, "SELECT end_date FROM dag_runs ORDER BY id DESC LIMIT 1")[0][0]


def mark(home: Path, pipelines: Path, state: str) -> str:
    result = flowtui("mark", "quick", "latest", "t", "--state", state, home=home,
                     pipelines=pipelines)
    assert result.returncode == 0, result.stderr
    return result.stdout


def check_marks(home: Path, pipelines: Path) -> list[str]:
    """Mark t success twice, then failed; return what the CLI said each time."""
    before, ended = timing(home), run_end(home)
    assert before[0] == "success" and before[2] is not None
    said = []
    for _ in range(2):
        out = mark(home, pipelines, "success")
        said.append(out)
        assert "t is already success; nothing changed" in out, out
        assert timing(home) == before
        assert run_end(home) == ended
    # Another terminal state: only the state changes; the recorded times stay.
    out = mark(home, pipelines, "failed")
    said.append(out)
    assert "nothing changed" not in out, out
    wait_for(lambda: timing(home)[0] == "failed", 15, "the mark to failed")
    assert timing(home)[1:] == before[1:]
    actions = [r[0] for r in rows(home, "SELECT action FROM audit_log WHERE action = 'mark'")]
    assert actions == ["mark"] * 3
    return said


def test_mark_noop_without_runner_keeps_history(home: Path, pipelines: Path) -> None:
    write(pipelines, "quick.yaml", PIPE)
    run_dag(home, pipelines, "quick")
    said = check_marks(home, pipelines)
    assert all("no runner is alive" in out for out in said), said
    assert rows(home, "SELECT state FROM dag_runs") == [("success",)]  # its leaf succeeded


def test_mark_noop_with_live_runner_keeps_history(home: Path, pipelines: Path,
                                                  runners: list) -> None:
    write(pipelines, "quick.yaml", PIPE)
    start(runners, home, pipelines)
    trigger(home, pipelines, "quick")
    wait_for(lambda: rows(home, "SELECT state FROM dag_runs") == [("success",)], 30,
             "the run to succeed")
    said = check_marks(home, pipelines)
    assert all("applied by runner" in out for out in said), said
