"""TUI actions that need a live runner: retry now, kill, and one action on several tasks."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from app_support import run_async, screen_text, until
from conftest import flowtui, write
from daemon_support import Runner, alive, wait_for

from flowtui.app.app import make_app
from flowtui.runner.config import load_config


def query(home: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(home / "flowtui.db")
    rows = conn.execute(sql).fetchall()
    conn.close()
    return rows


def test_retry_kill_and_select_several(home: Path, pipelines: Path) -> None:
    write(pipelines, "ops.yaml", """
        dag_id: ops
        tasks:
          waits: {command: '[ "$FLOWTUI_TRY_NUMBER" -ge 2 ] || exit 1', retries: 1, retry_delay: 1h}
          long_a: {command: 'sleep 60', retries: 0}
          long_b: {command: 'sleep 60', retries: 0}
    """)
    runner = Runner(home, pipelines)
    try:
        assert flowtui("trigger", "ops", home=home, pipelines=pipelines).returncode == 0
        wait_for(lambda: dict(query(home, "SELECT task_id, state FROM task_instances")) == {
            "waits": "up_for_retry", "long_a": "running", "long_b": "running"}, what="setup")
        pids = [r[0] for r in query(home, "SELECT pid FROM task_instances WHERE pid IS NOT NULL "
                                          "AND state = 'running'")]

        async def go() -> None:
            app = make_app(load_config(home, pipelines), refresh_seconds=0.2)
            async with app.run_test(size=(120, 40)) as pilot:
                await pilot.press("1")
                await until(pilot, lambda: "ops" in screen_text(app), what="DAGs")
                await pilot.press("enter")
                await until(pilot, lambda: "view: grid" in screen_text(app), what="grid")
                grid = app.screen.query_one("#grid")
                rows = [str(k.value) for k in grid.rows]
                # retry now on the task waiting an hour
                grid.move_cursor(row=rows.index("waits"), column=1)
                await pilot.press("r")
                await until(pilot, lambda: "Retry now 1 task" in screen_text(app), what="dialog")
                await pilot.press("y")
                await until(pilot, lambda: query(home, "SELECT state FROM task_instances WHERE "
                                                       "task_id = 'waits'")[0][0] == "success",
                            what="the retry")
                # space selects both long tasks, one kill confirms for both
                grid.move_cursor(row=rows.index("long_a"), column=1)
                await pilot.press("space")
                grid.move_cursor(row=rows.index("long_b"), column=1)
                await pilot.press("space")
                await pilot.press("ctrl+k")
                await until(pilot, lambda: "Kill 2 task(s)?" in screen_text(app), what="kill")
                text = screen_text(app)
                assert "long_a" in text and "long_b" in text
                await pilot.press("y")
                await until(pilot, lambda: query(home, "SELECT count(*) FROM task_instances "
                                                       "WHERE state = 'failed'")[0][0] == 2,
                            timeout=20, what="both killed")

        run_async(go())
        wait_for(lambda: not any(alive(p) for p in pids), 15, "the killed trees to end")
        reasons = [r[0] for r in query(home, "SELECT reason FROM task_instances WHERE state = "
                                             "'failed'")]
        assert all(r.startswith("killed by") for r in reasons)
        actions = [r[0] for r in query(home, "SELECT action FROM audit_log ORDER BY id")]
        assert actions == ["trigger", "retry", "kill", "kill"]
    finally:
        runner.stop()
