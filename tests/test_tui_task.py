"""Task detail answers what broke and why: rendered command, error excerpt, log tail, reason."""
from __future__ import annotations

import json
import re
import sqlite3
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from app_support import reads_done, run_async, screen_text, until
from conftest import flowtui, write
from daemon_support import start, trigger, wait_for

from flowtui.app.acting import TaskRef
from flowtui.app.app import make_app
from flowtui.app.task_screen import TaskScreen
from flowtui.runner.config import load_config

# The real error is buried under 2,000 lines of noise, with decoys after it that only look like
# errors; the log then goes on for a while, so the tail does not show the error line.
ETL = """
dag_id: etl
params: {source: default-bucket, batch: 1}
tasks:
  load:
    command: |
      echo "loading batch {{ params.batch }} from {{ params.source }} for {{ ds }}"
      i=0; while [ $i -lt 2000 ]; do echo "INFO row $i ok errors=0"; i=$((i+1)); done
      echo "psycopg.OperationalError: connection refused by db.internal:5432" >&2
      echo "INFO config: on_error=abort"
      echo "INFO summary: errors=0 warnings=0, 0 failed"
      i=0; while [ $i -lt 12 ]; do echo "INFO cleanup step $i"; i=$((i+1)); done
      printf 'INFO last line \\033]0;pwned\\007 done\\n'
      exit 3
  publish: {command: 'echo publish', deps: [load]}
"""
ERROR_LINE = "psycopg.OperationalError: connection refused by db.internal:5432"


def query(home: Path, sql: str, *args: object) -> list[tuple]:
    conn = sqlite3.connect(home / "flowtui.db")
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def on_screen(app) -> str:
    """What the terminal shows now, line by line (cut where the screen cuts)."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


@pytest.fixture
def failed_etl(home: Path, pipelines: Path) -> tuple[Path, Path]:
    write(pipelines, "etl.yaml", ETL)
    result = flowtui("run", "etl", "--date", "2026-03-01",
                     "--conf", json.dumps({"source": "s3://night-bucket/orders"}),
                     home=home, pipelines=pipelines)
    assert result.returncode == 1, result.stdout + result.stderr
    return home, pipelines


def ref_for(home: Path, dag_id: str, task_id: str) -> TaskRef:
    pk, run_id = query(home, "SELECT id, run_id FROM dag_runs WHERE dag_id = ? ORDER BY id DESC "
                             "LIMIT 1", dag_id)[0]
    return TaskRef(dag_id, pk, run_id, task_id)


@asynccontextmanager
async def task_detail(home: Path, pipelines: Path, ref: TaskRef, size: tuple[int, int]):
    """The real app at ``size`` with the task's detail open and its first read painted."""
    app = make_app(load_config(home, pipelines), refresh_seconds=0.2)
    async with app.run_test(size=size) as pilot:
        app.push_screen(TaskScreen(ref))
        await until(pilot, lambda: isinstance(app.screen, TaskScreen)
                    and app.screen.detail is not None, what="task detail")
        await reads_done(app)
        yield app, pilot


def test_failed_task_shows_command_excerpt_tail_and_reason(failed_etl) -> None:
    home, pipelines = failed_etl
    ref = ref_for(home, "etl", "load")

    async def go() -> None:
        async with task_detail(home, pipelines, ref, (120, 40)) as (app, pilot):
            text = screen_text(app)
            # the command as the task ran it: the conf value over the param, the date filled
            assert "loading batch 1 from s3://night-bucket/orders for 2026-03-01" in text
            assert "{{" not in text
            # the buried error line, not a decoy, with its kind
            assert f"error (failure line, try 1): {ERROR_LINE}" in text
            # why it is not running: the reason the runner recorded
            reason = query(home, "SELECT reason FROM task_instances WHERE task_id = 'load'")[0][0]
            assert reason and f"why not running: {reason}" in text
            # the tail: the last lines of the log, control characters escaped
            assert "INFO cleanup step 11" in text
            assert "INFO last line ^[]0;pwned^G done" in text
            assert "\x1b" not in text and "\x07" not in text
            # times absolute with a timezone
            assert re.search(r"started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z+\-0-9]+ \(\d+s ago\)",
                             text), text

    run_async(go())


def test_excerpt_and_reason_whole_at_80x24(failed_etl) -> None:
    home, pipelines = failed_etl
    ref = ref_for(home, "etl", "load")

    async def go() -> None:
        async with task_detail(home, pipelines, ref, (80, 24)) as (app, pilot):
            wanted = (f"error (failure line, try 1): {ERROR_LINE}", "why not running: exited 3",
                      "command: echo \"loading batch 1 from s3://night-bucket/orders",
                      "1 ✗ failed 3", "INFO cleanup step 11", "INFO last line")

            def flat() -> str:  # the screen's lines joined: a wrapped line reads whole again
                return " ".join(" ".join(line.split()) for line in on_screen(app).splitlines())

            try:  # a frame is laid out after the widgets change: wait for the settled one
                await until(pilot, lambda: all(w in flat() for w in wanted), what="the detail")
            except AssertionError:
                raise AssertionError(f"not all of {wanted} on screen:\n{on_screen(app)}")

    run_async(go())


def test_tries_cursor_stays_on_its_try(home: Path, pipelines: Path, runners) -> None:
    write(pipelines, "flaky.yaml", """
        dag_id: flaky
        tasks:
          pull: {command: 'echo "try $FLOWTUI_TRY_NUMBER"; exit 1', retries: 1, retry_delay: 1h}
    """)
    start(runners, home, pipelines)
    trigger(home, pipelines, "flaky")
    wait_for(lambda: query(home, "SELECT state FROM task_instances WHERE task_id = 'pull'")
             == [("up_for_retry",)], what="the first try to fail")
    ref = ref_for(home, "flaky", "pull")

    async def go() -> None:
        async with task_detail(home, pipelines, ref, (80, 24)) as (app, pilot):
            # a countdown to the retry, relative, and its time with a timezone
            await until(pilot, lambda: "retry in 59m" in on_screen(app)
                        or "retry in 1h" in on_screen(app), what="the retry countdown")
            screen = app.screen
            table = screen.query_one("#table")
            assert [str(k.value) for k in table.rows] == ["1"]
            # retry now from the CLI: try 2 arrives on top, the cursor stays on try 1
            result = flowtui("retry", "flaky", ref.run_id, "pull", home=home,
                             pipelines=pipelines)
            assert result.returncode == 0, result.stderr
            await until(pilot, lambda: [str(k.value) for k in table.rows] == ["2", "1"],
                        timeout=20, what="the second try")
            row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
            assert str(row_key.value) == "1"

    run_async(go())


def test_a_running_try_shows_no_frozen_duration(home: Path, pipelines: Path, runners) -> None:
    """The tries table is painted when the tries change, the head every second: a running
    try's "took" would stand still in the table while the head counts on. The table leaves it
    to the head, which says how long the try has been running."""
    write(pipelines, "slow.yaml", """
        dag_id: slow
        tasks:
          work: {command: 'sleep 30'}
    """)
    start(runners, home, pipelines)
    trigger(home, pipelines, "slow")
    wait_for(lambda: query(home, "SELECT pid FROM tries WHERE task_id = 'work'") not in
             ([], [(None,)]), what="the try to run")
    ref = ref_for(home, "slow", "work")

    async def go() -> None:
        async with task_detail(home, pipelines, ref, (100, 30)) as (app, pilot):
            await until(pilot, lambda: "running for" in on_screen(app), what="the head")
            table = app.screen.query_one("#table")
            await until(pilot, lambda: table.row_count == 1, what="the try's row")
            assert str(table.get_row_at(0)[3]) == "-"

    run_async(go())
