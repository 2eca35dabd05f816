"""The on-call TUI: the answer on screen with zero keys, a header that never lies, lists that keep
their place, and keys that do what SPEC 8 says (headless Pilot on a real store)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from app_support import run_async, screen_text, tables_settled, until
from conftest import flowtui, write
from daemon_support import start, trigger, wait_for

from flowtui.app.app import make_app, save_last_looked
from flowtui.runner.config import load_config

BURIED = """
dag_id: crunch
tasks:
  extract: {command: "echo extracted"}
  transform:
    deps: [extract]
    command: |
      echo "INFO config: on_error=abort"
      for i in $(seq 1 1000); do echo "INFO step $i ok rows=1000 errors=0"; done
      echo "ERROR psycopg.OperationalError: connection to 10.0.0.5:5432 refused"
      for i in $(seq 1 1000); do echo "INFO cleanup $i errors=0 0 failed"; done
      exit 3
  load: {deps: [transform], command: "echo load"}
"""
REAL_ERROR = "ERROR psycopg.OperationalError: connection to 10.0.0.5:5432 refused"


def app_for(home: Path, pipelines: Path, **options):
    return make_app(load_config(home, pipelines), refresh_seconds=0.2, **options)


@pytest.fixture
def failed(home: Path, pipelines: Path) -> tuple[Path, Path]:
    write(pipelines, "crunch.yaml", BURIED)
    write(pipelines, "other.yaml", "dag_id: other\ntasks:\n  a: {command: 'exit 1'}\n")
    assert flowtui("run", "other", home=home, pipelines=pipelines).returncode == 1
    assert flowtui("run", "crunch", home=home, pipelines=pipelines).returncode == 1
    return home, pipelines


def test_now_shows_the_real_error_of_the_newest_failure_with_zero_keys(failed) -> None:
    async def go() -> None:
        app = app_for(*failed)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: REAL_ERROR in screen_text(app), what="the excerpt")
            shown = screen_text(app)
            assert "crunch.transform" in shown and "exited 3" in shown
            assert "on_error=abort" not in shown.split("error:")[1].splitlines()[0]

    run_async(go())


def test_a_retry_counts_down_in_whole_seconds(home: Path, pipelines: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a minute to a retry reads "retry in 4s", not a duration to the hundredth."""
    import sqlite3

    write(pipelines, "other.yaml", "dag_id: other\ntasks:\n  a: {command: 'exit 1'}\n")
    assert flowtui("run", "other", home=home, pipelines=pipelines).returncode == 1
    now = time.time()
    with sqlite3.connect(home / "flowtui.db") as conn:  # as a runner leaves a task to retry
        conn.execute("UPDATE task_instances SET state = 'up_for_retry', next_try_at = ?",
                     (now + 3.2,))
    monkeypatch.setattr(time, "time", lambda: now)

    async def go() -> None:
        app = app_for(home, pipelines)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: "retry in" in screen_text(app), what="the countdown")
            assert "retrying  retry in 4s" in screen_text(app)

    run_async(go())


def test_the_header_tells_a_dead_runner_without_any_store_change(home: Path, pipelines: Path,
                                                                 runners: list) -> None:
    write(pipelines, "idle.yaml", "dag_id: idle\ntasks:\n  a: {command: 'true'}\n")
    runner = start(runners, home, pipelines)

    async def go() -> None:
        app = app_for(home, pipelines)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: "● runner" in screen_text(app), what="a live runner")
            runner.kill9()
            killed = time.monotonic()
            await until(pilot, lambda: "runner DOWN" in screen_text(app), timeout=7.0,
                        what="the header to say the runner is down")
            assert time.monotonic() - killed < 7.0  # heartbeat interval (5 s) + 2 s

    run_async(go())


def test_a_fresh_home_with_no_runner_says_so(home: Path, pipelines: Path) -> None:
    write(pipelines, "idle.yaml", "dag_id: idle\ntasks:\n  a: {command: 'true'}\n")

    async def go() -> None:
        app = app_for(home, pipelines)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: "no runner" in screen_text(app), what="the hint")
            assert "flowtui runner" in screen_text(app)

    run_async(go())


def test_the_cursor_stays_on_its_item_when_a_new_failure_arrives(failed) -> None:
    home, pipelines = failed

    async def go() -> None:
        app = app_for(home, pipelines)
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: app.screen.table.row_count >= 3, what="the Now list")
            table = app.screen.table
            table.move_cursor(row=2)
            before = app.screen.current_key()
            assert flowtui("run", "other", home=home, pipelines=pipelines).returncode == 1
            count = table.row_count
            await until(pilot, lambda: table.row_count > count, what="the new failure")
            assert app.screen.current_key() == before  # the same task, not the same row

    run_async(go())


def test_a_filter_is_shown_and_esc_clears_it(failed) -> None:
    async def go() -> None:
        app = app_for(*failed)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.screen.table.row_count >= 3, what="the Now list")
            await pilot.press("slash", *"other", "enter")
            await until(pilot, lambda: app.screen.table.row_count == 1, what="filtered")
            assert "filter: other" in screen_text(app)
            await pilot.press("escape")
            await until(pilot, lambda: app.screen.table.row_count >= 3, what="unfiltered")
            assert "filter:" not in screen_text(app)

    run_async(go())


def test_number_keys_open_the_screen_itself_not_an_old_stack(failed) -> None:
    async def go() -> None:
        app = app_for(*failed)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("1")
            await until(pilot, lambda: "crunch" in screen_text(app), what="DAGs")
            await pilot.press("i")
            await until(pilot, lambda: "Import errors" in screen_text(app), what="import errors")
            await pilot.press("0", "1")
            await until(pilot, lambda: "next run" in screen_text(app), what="the DAGs list")
            assert type(app.screen).__name__ == "DagsScreen"

    run_async(go())


def test_j_k_home_and_end_move_in_lists(failed) -> None:
    async def go() -> None:
        app = app_for(*failed)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.screen.table.row_count >= 3, what="the Now list")
            table = app.screen.table
            await pilot.press("j")
            assert table.cursor_row == 1
            await pilot.press("k")
            assert table.cursor_row == 0
            await pilot.press("end")
            assert table.cursor_row == table.row_count - 1
            await pilot.press("home")
            assert table.cursor_row == 0

    run_async(go())


def test_the_palette_reaches_every_screen_dag_and_action_from_anywhere(failed) -> None:
    async def go() -> None:
        app = app_for(*failed)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("2")
            await until(pilot, lambda: "Runs" in screen_text(app), what="runs")
            # The DAGs come with the app's first poll of the store.
            await until(pilot, lambda: "DAG other" in [
                c.title for c in app.get_system_commands(app.screen)], what="the DAGs")
            titles = [c.title for c in app.get_system_commands(app.screen)]
            assert "Trigger crunch" in titles and "DAG other" in titles
            assert any(t.startswith("Go to alerts") for t in titles)
            assert not any("screenshot" in t.lower() for t in titles)
            command = next(c for c in app.get_system_commands(app.screen)
                           if c.title == "Trigger crunch")
            command.callback()
            await until(pilot, lambda: "Trigger" in screen_text(app) and "conf" in
                        screen_text(app).lower(), what="the trigger dialog")

    run_async(go())


def test_time_range_and_new_since_last_looked(failed) -> None:
    home, pipelines = failed
    save_last_looked(home.resolve(), time.time())  # the run below starts later: it is new
    assert flowtui("run", "other", home=home, pipelines=pipelines).returncode == 1

    async def go() -> None:
        app = app_for(home, pipelines)
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: "1 new since you last looked" in screen_text(app),
                        what="the new item counted")
            await pilot.press("T", "T")
            await until(pilot, lambda: "since you last looked" in screen_text(app)
                        and app.screen.table.row_count == 1, what="only what is new")

    run_async(go())


@pytest.mark.parametrize("key, labels", [
    ("0", ["state", "task", "why"]),
    ("2", ["run", "state", "started", "duration"]),
    ("3", ["kind", "where", "summary"]),
    ("4", ["deadline", "left", "predicted"]),
])
def test_essential_columns_start_on_screen_at_80x24(failed, key: str, labels: list[str]) -> None:
    async def go() -> None:
        app = app_for(*failed)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press(key)
            await until(pilot, lambda: (type(app.screen).__name__ != "NowScreen" or key == "0")
                        and app.screen.loaded and tables_settled(app), what="the screen's rows")
            table = app.screen.table
            offsets, x = {}, 0
            for column in table.ordered_columns:
                offsets[str(column.label)] = x
                x += column.get_render_width(table)
            for label in labels:  # at least the start of each essential column is visible
                assert offsets[label] + 6 <= 80, (label, offsets)

    run_async(go())


def type_ahead(app, *keys: str) -> None:
    """Keys that reach the app in one read, as a fast typist's do over a slow SSH link: every
    one is queued before the first is handled."""
    from textual import events
    for key in keys:
        char = {"slash": "/", "enter": "\r", "escape": "\x1b"}.get(key, key)
        event = events.Key(key, char)
        event.set_sender(app)
        app._driver.send_message(event)


def test_keys_typed_ahead_of_the_screen_all_land(failed) -> None:
    """`1 / other Enter` typed in one breath switches screen, opens the filter, fills it and
    applies it: no key is lost to a focus change still pending."""
    async def go() -> None:
        app = app_for(*failed)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.screen.table.row_count >= 3, what="the Now list")
            type_ahead(app, "1", "slash", *"other", "enter")
            await until(pilot, lambda: "filter: other" in screen_text(app), what="the filter")
            assert app.screen.TITLE == "DAGs"
            await until(pilot, lambda: app.screen.table.row_count == 1, what="filtered")
            type_ahead(app, "slash", "escape", "slash", *"crunch", "enter")
            await until(pilot, lambda: "filter: crunch" in screen_text(app), what="a new filter")

    run_async(go())


def test_now_puts_a_runs_failure_above_the_tasks_it_failed_upstream(home: Path,
                                                                   pipelines: Path) -> None:
    """The upstream-failed task ends a moment after the failure that ended it: newest first
    alone would put the consequence under the cursor, and `c` would clear the wrong task."""
    write(pipelines, "gate.yaml", """
        dag_id: gate
        tasks:
          check: {command: 'exit 1'}
          after: {command: 'true', deps: [check]}
          report: {command: 'true', deps: [after]}
    """)
    assert flowtui("run", "gate", home=home, pipelines=pipelines).returncode == 1
    time.sleep(1.1)  # a later second: the consequence is now the newest row
    cleared = flowtui("clear", "gate", "latest", "after", "--yes", home=home, pipelines=pipelines)
    assert cleared.returncode == 0, cleared.stderr  # it is failed upstream again at once

    async def go() -> None:
        app = app_for(home, pipelines)
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: app.screen.table.row_count == 3, what="the Now list")
            assert app.screen.current_key().endswith("check")  # the cause, under the cursor
            rows = [str(k.value) for k in app.screen.table.rows]
            assert rows[0].endswith("check")

    run_async(go())
