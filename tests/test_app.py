"""The TUI driven headless (App.run_test + Pilot) against a real store with real runs."""
from __future__ import annotations

import re
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from app_support import run_async, screen_text, until
from conftest import flowtui, write
from helpers import run_dag

from flowtui.app.app import make_app
from flowtui.runner.config import load_config

PIPE = """
dag_id: shop
schedule: "@daily"
start_date: 2026-01-01
tasks:
  extract:
    command: 'echo "calling API"; printf "\\033]0;pwned\\007 title\\n"; echo "Error 503" >&2; exit 1'
  load: {command: 'echo load', deps: [extract]}
  report: {command: 'echo report', deps: [load]}
"""
GOOD = """
dag_id: fine
tasks:
  a: {command: 'echo ok'}
  b: {command: 'echo ok', deps: [a]}
"""


@pytest.fixture
def world(home: Path, pipelines: Path) -> tuple[Path, Path]:
    write(pipelines, "shop.yaml", PIPE)
    write(pipelines, "fine.yaml", GOOD)
    run_dag(home, pipelines, "fine")
    run_dag(home, pipelines, "shop")
    write(pipelines, "broken.yaml", "dag_id: broken\ntasks: [\n")
    from flowtui.commands import sync
    from flowtui.runner.loader import load_folder
    from flowtui.store import Store

    sync(Store.open(home / "flowtui.db"), load_folder(pipelines))
    return home, pipelines


def app_for(world: tuple[Path, Path], **options):
    home, pipelines = world
    return make_app(load_config(home, pipelines), refresh_seconds=0.2, **options)


def select_row(app, key: str) -> None:
    """Put the list's cursor on the row with this key (a DAG id)."""
    table = app.screen.query_one("#table")
    table.move_cursor(row=[str(k.value) for k in table.rows].index(key))


def query(home: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(home / "flowtui.db")
    rows = conn.execute(sql).fetchall()
    conn.close()
    return rows


def test_triage_failed_task_log_in_one_key(world) -> None:
    async def go() -> None:
        app = app_for(world)
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: "extract" in screen_text(app), what="the Now screen")
            text = screen_text(app)
            assert "failed" in text and "upstream_failed" in text and "shop" in text
            await pilot.press("l")
            await until(pilot, lambda: "Error 503" in screen_text(app), what="the log")
            shown = screen_text(app)
            assert "^[]0;pwned^G title" in shown  # escape codes as visible text
            assert "\x1b" not in shown

    run_async(go())


@pytest.mark.long(6)
def test_every_screen_opens(world, monkeypatch: pytest.MonkeyPatch) -> None:
    from textual.widgets._footer import FooterKey

    from flowtui.app.base import KeysFooter

    # The footer is rebuilt on every screen and focus move: a key restyled one at a time as
    # it mounts (two full style passes each) was a third of the CPU of opening a screen.
    restyled: list[str] = []
    real_update = FooterKey.update_node_styles
    monkeypatch.setattr(FooterKey, "update_node_styles", lambda key, *args, **kwargs: (
        restyled.append(key.key), real_update(key, *args, **kwargs))[1])
    # ... and rebuilt only when the keys it shows change (Textual rebuilt it on every focus
    # move and binding refresh, some 18 times a screen).
    rebuilt: list[str] = []
    real_recompose = KeysFooter.recompose
    monkeypatch.setattr(KeysFooter, "recompose", lambda footer: (
        rebuilt.append(type(footer.screen).__name__), real_recompose(footer))[1])

    async def go() -> None:
        app = app_for(world)
        async with app.run_test(size=(120, 40)) as pilot:
            expectations = {"1": "fine", "2": "manual", "3": "Alerts", "4": "SLA",
                            "5": "pools", "0": "extract"}
            for key, word in expectations.items():
                await pilot.press(key)
                await until(pilot, lambda w=word: w in screen_text(app), what=f"screen {key}")
            await pilot.press("1")
            await until(pilot, lambda: "import error" in screen_text(app), what="DAGs")
            await pilot.press("i")
            await until(pilot, lambda: "broken.yaml" in screen_text(app), what="import errors")
            await pilot.press("escape")
            # DAG grid -> graph -> chart -> gantt -> task detail
            await pilot.press("enter")
            await until(pilot, lambda: "view: grid" in screen_text(app), what="the grid")
            for key, word in (("g", "critical path"), ("D", "Recent run durations"),
                              ("G", "where the time went")):
                await pilot.press(key)
                await until(pilot, lambda w=word: w in screen_text(app), what=key)
            await pilot.press("G")
            await until(pilot, lambda: "view: grid" in screen_text(app), what="back to grid")
            await pilot.press("enter")
            await until(pilot, lambda: "why not running" in screen_text(app) or
                        "finished successfully" in screen_text(app), what="task detail")
            await pilot.press("question_mark")
            await until(pilot, lambda: "Keys:" in screen_text(app), what="help")
            assert "Clear" in screen_text(app) and "Logs" in screen_text(app)
        assert not restyled, f"footer keys restyled one at a time: {len(restyled)}"
        # Once a screen, and on the DAG screen once a view with keys of its own (five views).
        built = Counter(rebuilt)
        assert built.pop("DagScreen", 0) <= 5 and set(built.values()) == {1}, rebuilt

    run_async(go())


def test_clear_from_the_grid_resets_the_task_and_downstream(world) -> None:
    home, _ = world

    async def go() -> None:
        app = app_for(world)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("1")
            await until(pilot, lambda: "shop" in screen_text(app), what="DAGs")
            select_row(app, "shop")
            await pilot.press("enter")
            await until(pilot, lambda: "view: grid" in screen_text(app), what="grid")
            await pilot.press("c")
            await until(pilot, lambda: "go back to none" in screen_text(app), what="dialog")
            text = screen_text(app)
            assert "extract" in text and "load" in text and "report" in text
            await pilot.press("y")
            await until(pilot, lambda: query(home, "SELECT state FROM task_instances "
                                                   "WHERE task_id = 'extract' AND dag_id = "
                                                   "'shop'")[0][0] == "none", what="the clear")

    run_async(go())
    states = dict(query(home, "SELECT task_id, state FROM task_instances WHERE dag_id = 'shop'"))
    assert states == {"extract": "none", "load": "none", "report": "none"}
    audit = query(home, "SELECT action, task_id, user FROM audit_log")
    assert audit and audit[-1][0] == "clear" and audit[-1][1] == "extract,load,report"


def test_mark_and_trigger_and_pause_from_the_keyboard(world) -> None:
    home, _ = world

    async def go() -> None:
        app = app_for(world)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: "extract" in screen_text(app), what="Now")
            await pilot.press("m")
            await until(pilot, lambda: "Set them to" in screen_text(app), what="mark dialog")
            await pilot.press("s")
            await until(pilot, lambda: query(home, "SELECT state FROM task_instances WHERE "
                                                   "task_id = 'extract'")[0][0] == "success",
                        what="the mark")
            await pilot.press("1")
            await until(pilot, lambda: "fine" in screen_text(app), what="DAGs")
            select_row(app, "fine")
            await pilot.press("t")
            await until(pilot, lambda: "Trigger a run of fine" in screen_text(app), what="dialog")
            conf = app.screen.query_one("#conf")
            conf.value = "{not json"
            await pilot.press("enter")
            await until(pilot, lambda: "not valid JSON" in screen_text(app), what="JSON check")
            conf.value = '{"source": "staging"}'
            await pilot.click("#confirm")
            await until(pilot, lambda: query(home, "SELECT count(*) FROM dag_runs WHERE dag_id = "
                                                   "'fine' AND state = 'queued'")[0][0] == 1,
                        what="the trigger")
            await pilot.press("p")
            await until(pilot, lambda: "Pause fine?" in screen_text(app), what="pause dialog")
            await pilot.press("y")
            await until(pilot, lambda: query(home, "SELECT paused FROM dags WHERE dag_id = "
                                                   "'fine'")[0][0] == 1, what="the pause")

    run_async(go())
    actions = [a[0] for a in query(home, "SELECT action FROM audit_log ORDER BY id")]
    assert actions == ["mark", "trigger", "pause"]
    conf = query(home, "SELECT conf FROM dag_runs WHERE state = 'queued'")[0][0]
    assert '"staging"' in conf


def test_backfill_dialog_previews_before_it_starts(world) -> None:
    home, _ = world

    async def go() -> None:
        app = app_for(world)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("1")
            await until(pilot, lambda: "shop" in screen_text(app), what="DAGs")
            select_row(app, "shop")
            await pilot.press("b")
            await until(pilot, lambda: "Backfill shop" in screen_text(app), what="dialog")
            app.screen.query_one("#start").value = "2026-03-01"
            app.screen.query_one("#end").value = "2026-03-03"
            app.screen.query_one("#parallelism").value = "2"
            assert app.screen.query_one("#start-backfill").disabled
            await pilot.click("#preview")
            await until(pilot, lambda: "creates 3 run(s)" in screen_text(app), what="preview")
            await pilot.click("#start-backfill")
            await until(pilot, lambda: query(home, "SELECT count(*) FROM backfills")[0][0] == 1,
                        what="the backfill")

    run_async(go())
    assert query(home, "SELECT parallelism, state FROM backfills") == [(2, "running")]
    assert query(home, "SELECT count(*) FROM dag_runs WHERE run_type = 'backfill'")[0][0] == 3


def test_read_only_hides_every_action(world) -> None:
    home, _ = world

    async def go() -> None:
        app = app_for(world, read_only=True)
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: "extract" in screen_text(app), what="Now")
            assert "read-only" in screen_text(app)
            stack = list(app.screen_stack)
            await pilot.press("c")
            await pilot.press("m")
            # A dialog opens in the key's own handler: none opened, none is on its way.
            assert app.screen_stack == stack
            assert "go back to none" not in screen_text(app)
            assert "Set them to" not in screen_text(app)
            enabled = [a.binding.description for a in app.screen.active_bindings.values()
                       if a.enabled]
            assert "Logs" in enabled
            assert not {"Clear", "Mark", "Retry", "Kill"} & set(enabled)

    run_async(go())
    assert query(home, "SELECT count(*) FROM audit_log")[0][0] == 0


def test_ack_an_alert_from_the_alerts_screen(world) -> None:
    home, _ = world
    conn = sqlite3.connect(home / "flowtui.db")
    conn.execute("INSERT INTO alerts (kind, dag_id, run_id, task_id, state, severity, level, "
                 "summary, created_at, updated_at, next_step_at) VALUES ('task_failed', 'shop', "
                 "'r', 'extract', 'open', 'error', 1, 'exited 1', 1, 1, 9e9)")
    conn.commit()
    conn.close()

    async def go() -> None:
        app = app_for(world)
        async with app.run_test(size=(140, 30)) as pilot:
            await pilot.press("3")
            await until(pilot, lambda: "task_failed" in screen_text(app), what="alerts")
            assert "alerts open: 1" in screen_text(app)
            await pilot.press("a")
            await until(pilot, lambda: "Ack alert 1?" in screen_text(app), what="dialog")
            await pilot.press("y")
            await until(pilot, lambda: query(home, "SELECT state FROM alerts")[0][0] == "acked",
                        what="the ack")

    run_async(go())
    assert query(home, "SELECT action FROM audit_log") == [("ack",)]
    assert query(home, "SELECT next_step_at FROM alerts") == [(None,)]


def test_a_screen_reads_the_store_one_fetch_at_a_time(world, monkeypatch) -> None:
    """At start a screen is asked to read three times at once (mounted, shown, the first change
    seen): one read answers them all, and reads never run side by side. (The DAGs list paints
    from the store before the DAG files are read, then reads once more with them.)"""
    import threading
    import time as clock

    from flowtui.app import lists

    inside, most, calls = [0], [0], {True: 0, False: 0}
    lock = threading.Lock()
    real = lists.DagsScreen.fetch

    def slow_fetch(self, data):
        with lock:
            inside[0] += 1
            calls[self.app.ops.loaded() is not None] += 1
            most[0] = max(most[0], inside[0])
        clock.sleep(0.3)  # a big home's read
        try:
            return real(self, data)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(lists.DagsScreen, "fetch", slow_fetch)

    async def go() -> None:
        app = app_for(world, start_mode="dags")
        async with app.run_test(size=(120, 30)) as pilot:
            await until(pilot, lambda: "shop" in screen_text(app), what="the DAGs list")
            await until(pilot, lambda: inside[0] == 0 and not getattr(app.screen, "_in_flight", 0),
                        what="the reads to settle")
            assert most[0] == 1, most[0]
            # Asked again when shown and when the app first sees the store: the read running
            # then already saw it, whatever order the three arrive in (a slow machine).
            await until(pilot, lambda: calls[True] == 1, what="the read with the DAG files")
            await until(pilot, lambda: inside[0] == 0 and not app.screen._in_flight,
                        what="the reads to settle")
            assert calls == {True: 1, False: calls[False]} and calls[False] <= 1, calls

    run_async(go())


def test_the_dags_list_paints_from_the_store_before_the_dag_files_are_read(world,
                                                                        monkeypatch) -> None:
    """1,000 DAG files take most of a second to parse: the list shows every DAG, its recent
    runs and its state from the store at once, marks the columns only the files give (next
    run) as pending, and fills them once the files are read."""
    import threading

    from flowtui.app.operations import Operations

    release = threading.Event()
    real = Operations.dags

    def slow_dags(self):
        release.wait(10)  # the files are still being read
        return real(self)

    monkeypatch.setattr(Operations, "dags", slow_dags)

    async def go() -> None:
        app = app_for(world, start_mode="dags")
        async with app.run_test(size=(120, 30)) as pilot:
            await until(pilot, lambda: "shop" in screen_text(app), what="the DAGs list")
            def row(dag_id: str) -> str:
                return next(line for line in screen_text(app).splitlines()
                            if line.startswith(dag_id + " "))

            assert row("shop").startswith("shop … ✗")  # its failed run; next run pending
            assert row("fine").startswith("fine … ✓")  # (not made up: "-" means none)
            release.set()
            await until(pilot, lambda: row("shop").startswith("shop in "), what="the next run")
            assert row("fine").startswith("fine - ✓")
            # A file changed later is read again at the next read (the next change in the
            # store): its schedule, not the first read's.
            home, pipelines = world
            write(pipelines, "fine.yaml", GOOD.replace(
                "dag_id: fine", "dag_id: fine\nschedule: '@hourly'\nstart_date: 2026-01-01"))
            assert flowtui("trigger", "shop", home=home, pipelines=pipelines).returncode == 0
            # (in the hour's last minute the next fire is seconds away: "in 45.0s")
            await until(pilot, lambda: re.match(r"fine +in \d", row("fine")),
                        what="fine's new schedule")

    try:
        run_async(go())
    finally:
        release.set()


def test_dag_files_no_runner_has_recorded_are_counted_not_hidden(home: Path,
                                                                 pipelines: Path) -> None:
    """A new home opened without a runner: the DAGs list (what runners recorded) is empty, and
    says how many DAGs the folder holds that no runner has recorded yet."""
    write(pipelines, "shop.yaml", PIPE)
    write(pipelines, "fine.yaml", GOOD)

    async def go() -> None:
        app = app_for((home, pipelines), start_mode="dags")
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: "2 in the pipelines folder not recorded yet: start a "
                        "runner" in screen_text(app), what="the count of unrecorded DAGs")

    run_async(go())


def test_the_other_screens_are_built_while_the_first_is_read(world) -> None:
    """A screen's first build costs ~120 ms: done in the background after the first paint, so
    a key later shows its screen without it (and what it read meanwhile)."""
    async def go() -> None:
        app = app_for(world, start_mode="now")
        async with app.run_test(size=(120, 30)) as pilot:
            await until(pilot, lambda: app.first_paint_at is not None, what="the first screen")
            await until(pilot, lambda: set(app.MODES) <= set(app._screen_stacks),  # Textual's
                        what="every screen built", timeout=15)                      # own record
            built = app._screen_stacks["datasets"][0]
            await pilot.press("7")
            await until(pilot, lambda: app.screen is built and "Datasets" in screen_text(app),
                        what="the built datasets screen shown")

    run_async(go())


def test_the_dags_list_says_a_broken_file_is_there_and_a_removed_one_gone(
        home: Path, pipelines: Path) -> None:
    """A DAG whose file broke is "not loaded" when no runner holds its last good definition
    (one started after the file broke), never "file gone": its file is right there, broken.
    A DAG whose file was removed is gone."""
    from flowtui.commands import sync
    from flowtui.runner.loader import load_folder
    from flowtui.store import Store

    write(pipelines, "shop.yaml", PIPE)
    write(pipelines, "fine.yaml", GOOD)
    store = Store.open(home / "flowtui.db")
    sync(store, load_folder(pipelines))
    write(pipelines, "fine.yaml", "dag_id: fine\ntasks:\n  a: {command: 'x', deps: [nope]}\n")
    (pipelines / "shop.yaml").unlink()
    # What a runner started now records: its import errors, and the DAGs it has (neither).
    sync(store, load_folder(pipelines))
    store.set_active({})
    store.close()

    async def go() -> None:
        app = app_for((home, pipelines), start_mode="dags")
        async with app.run_test(size=(160, 30)) as pilot:
            def row(dag_id: str) -> str:
                return next((line for line in screen_text(app).splitlines()
                             if line.startswith(dag_id + " ")), "")

            await until(pilot, lambda: "not loaded" in row("fine"), what="fine's problem")
            assert "file gone" not in row("fine")
            assert "file gone" in row("shop") and "errors" not in row("shop")

    run_async(go())


def test_a_file_that_breaks_while_the_dags_list_is_open_shows_at_once(
        home: Path, pipelines: Path) -> None:
    """Recording a load whose import errors changed moves the store's change mark, so a screen
    open on the DAGs shows the broken file at the next poll (before, only the next task event
    or runner heartbeat refreshed it; with no runner, never)."""
    from flowtui.commands import sync
    from flowtui.runner.loader import load_folder
    from flowtui.store import Store

    write(pipelines, "fine.yaml", GOOD)
    store = Store.open(home / "flowtui.db")
    sync(store, load_folder(pipelines))

    async def go() -> None:
        app = app_for((home, pipelines), start_mode="dags")
        async with app.run_test(size=(160, 30)) as pilot:
            await until(pilot, lambda: "fine" in screen_text(app), what="the DAGs list")
            write(pipelines, "fine.yaml", "dag_id: fine\ntasks:\n  a: {deps: [nope]}\n")
            sync(store, load_folder(pipelines))  # a runner's or a command's load
            await until(pilot, lambda: "1 import error" in screen_text(app), timeout=5,
                        what="the broken file")

    try:
        run_async(go())
    finally:
        store.close()
