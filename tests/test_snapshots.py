"""Snapshot tests of every screen at 80x24 and 160x48, in the dark and high-contrast themes.

The store is filled with fixed times and the clock is frozen, so a snapshot changes only when
the layout does. Update after reading the diff, in one process (so that snapshots no test
uses any more are removed too): ``pytest -n 0 tests/test_snapshots.py --snapshot-update``.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from app_support import reads_done, run_async, screen_text, tables_settled, until

from flowtui.app.app import make_app
from flowtui.runner.config import load_config
from flowtui.runner.loader import load_folder
from flowtui.store import Store

NOW = 1772366400.0  # 2026-03-01 12:00:00 UTC
ROOT_NAME = "flowtui-snapshots"  # under the test's own $HOME: shown as ~/flowtui-snapshots
PIPE = """
dag_id: orders
schedule: "0 6 * * *"
start_date: 2026-01-01
sla: {within: 8h}
alerts: []
tasks:
  extract_orders: {command: 'echo extract'}
  extract_customers: {command: 'echo extract'}
  transform: {command: 'echo t', deps: [extract_orders, extract_customers]}
  load: {command: 'echo l', deps: [transform], outlets: [warehouse.orders]}
  notify_failure: {command: 'echo n', deps: [load], trigger_rule: one_failed}
"""
BROKEN = "dag_id: broken\ntasks:\n  a: {command: 'true', retires: 2}\n"


def build_store(home: Path, pipelines: Path) -> None:
    from flowtui.commands import sync

    result = load_folder(pipelines)
    store = Store.open(home / "flowtui.db")
    sync(store, result)
    dag = result.dags["orders"]
    logs = home / "logs"
    import datetime as dt

    for day, outcome in ((25, "success"), (26, "success"), (27, "failed"), (28, "running")):
        logical = dt.datetime(2026, 2, day, 6, tzinfo=dt.timezone.utc).timestamp()
        start = logical + 86400  # created when its interval ends
        run_id = f"scheduled__2026-02-{day:02d}T06:00:00+00:00"
        tasks = [(t.task_id, t.max_tries, t.pool, t.pool_slots, dag.priority[t.task_id])
                 for t in dag.tasks.values()]
        pk = store.create_run(dag_id="orders", run_id=run_id, run_type="scheduled",
                              logical_date=logical, data_interval_start=logical,
                              data_interval_end=start, conf={}, state="running", runner_id=None,
                              tasks=tasks).pk
        timeline = {"extract_orders": (0, 40), "extract_customers": (0, 25),
                    "transform": (40, 160), "load": (160, 200)}
        with store.transaction() as conn:
            for task_id, (a, b) in timeline.items():
                state, code, reason = "success", 0, ""
                if outcome == "failed" and task_id == "transform":
                    state, code, reason = "failed", 1, "exited 1"
                if outcome == "failed" and task_id == "load":
                    conn.execute("UPDATE task_instances SET state = 'upstream_failed', reason = "
                                 "'trigger rule all_success can no longer be met' WHERE run_pk = ? "
                                 "AND task_id = 'load'", (pk,))
                    continue
                if outcome == "running" and task_id == "load":
                    conn.execute("UPDATE task_instances SET reason = 'waiting for upstream "
                                 "transform' WHERE run_pk = ? AND task_id = 'load'", (pk,))
                    continue
                end = start + b
                if outcome == "running" and task_id == "transform":
                    state, code, end = "running", None, None
                log = logs / "orders" / run_id / task_id / "1.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                log.write_text(f"{task_id} starting\nrows=1500\n" + (
                    "Traceback (most recent call last):\nValueError: bad row 17\n"
                    if code == 1 else "done\n"))
                conn.execute("UPDATE task_instances SET state = ?, try_number = 1, "
                             "start_date = ?, end_date = ?, exit_code = ?, reason = ?, pid = ? "
                             "WHERE run_pk = ? AND task_id = ?",
                             (state, start + a, end, code, reason,
                              4242 if state == "running" else None, pk, task_id))
                conn.execute("INSERT INTO tries (run_pk, task_id, try_number, state, start_date, "
                             "end_date, exit_code, reason, log_path, exit_path, progress, "
                             "metadata) VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (pk, task_id, state, start + a, end, code, reason, str(log),
                              str(log.with_suffix(".exit")),
                              45.0 if state == "running" else None,
                              '{"rows": 1500}'))
            notify = {"success": "skipped", "failed": "success", "running": "none"}[outcome]
            conn.execute("UPDATE task_instances SET state = ? WHERE run_pk = ? AND task_id = "
                         "'notify_failure'", (notify, pk))
            final = {"success": "success", "failed": "failed", "running": "running"}[outcome]
            conn.execute("UPDATE dag_runs SET state = ?, start_date = ?, end_date = ?, "
                         "updated_at = ? WHERE id = ?",
                         (final, start, None if final == "running" else start + 205, NOW, pk))
            conn.execute("UPDATE task_instances SET updated_at = ? WHERE run_pk = ?", (NOW - 300, pk))
    with store.transaction() as conn:
        conn.execute("INSERT INTO alerts (kind, dag_id, run_id, task_id, state, severity, level, "
                     "summary, created_at, updated_at, next_step_at) VALUES ('task_failed', "
                     "'orders', 'scheduled__2026-02-27T06:00:00+00:00', 'transform', 'open', "
                     "'error', 1, 'exited 1', ?, ?, ?)", (NOW - 600, NOW - 600, NOW + 300))
        conn.execute("INSERT INTO deliveries (alert_id, channel, action, status, attempts, "
                     "next_attempt_at, last_status, created_at, updated_at) VALUES (1, 'slack', "
                     "'trigger', 'sent', 1, ?, 'HTTP 200', ?, ?)", (NOW, NOW, NOW))
    store.close()


@pytest.fixture(scope="session")
def prepared_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The store every snapshot shows, built once per worker: the $HOME it lives under (its
    paths are recorded in the store) and a pristine copy that each test starts from."""
    user_home = tmp_path_factory.mktemp("snapshot-user-home")
    root = user_home / ROOT_NAME
    home, pipelines = root / "home", root / "pipelines"
    home.mkdir(parents=True)
    pipelines.mkdir(parents=True)
    (pipelines / "orders.yaml").write_text(PIPE.lstrip())
    build_store(home, pipelines)
    (pipelines / "broken.yaml").write_text(BROKEN)
    from flowtui.commands import sync

    store = Store.open(home / "flowtui.db")
    sync(store, load_folder(pipelines))
    store.close()
    pristine = tmp_path_factory.mktemp("snapshot-pristine") / ROOT_NAME
    shutil.copytree(root, pristine)
    return user_home, pristine


@pytest.fixture
def snapshot_app(prepared_home: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch):
    user_home, pristine = prepared_home
    monkeypatch.setenv("HOME", str(user_home))
    root = user_home / ROOT_NAME
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(pristine, root)  # what an earlier test's app wrote is gone
    home, pipelines = root / "home", root / "pipelines"
    monkeypatch.setattr(time, "time", lambda: NOW)

    def make(theme: str):
        return make_app(load_config(home, pipelines), theme=theme, refresh_seconds=3600)

    yield make
    shutil.rmtree(root, ignore_errors=True)


SCREENS = {
    "now": ([], "transform"),
    "dags": (["1"], "orders"),
    "runs": (["2"], "scheduled"),
    "runner": (["5"], "pools"),
    "alerts": (["3"], "task_failed"),
    "sla": (["4"], "critical path"),
    "import_errors": (["1", "i"], "retires"),
    "grid": (["1", "enter"], "view: grid"),
    "graph": (["1", "enter", "g"], "critical path"),
    "gantt": (["1", "enter", "G"], "where the time went"),
    "task": (["enter"], "try 1 of 1"),
    "log": (["l"], "ValueError"),
    "help": (["question_mark"], "Keys:"),
    "clear_dialog": (["c"], "go back to none"),
    "backfills": (["6"], "Backfills"),
    "datasets": (["7"], "freshness: "),
}
# Every screen at both sizes in the dark and high-contrast themes, and at 80x24 in monochrome
# (NO_COLOR): state must read from glyphs and text alone.
VARIANTS = [(size, theme) for size in ((80, 24), (160, 48)) for theme in ("dark", "high-contrast")]
VARIANTS.append(((80, 24), "mono"))


async def open_screen(app, pilot, keys: list[str], marker: str) -> None:
    """From Now with nothing stacked on it, press ``keys`` and wait until the screen they open
    is read, drawn and still."""
    while len(app.screen_stack) > 1:
        app.pop_screen()
    app.action_mode("now")
    await reads_done(app)
    await pilot.pause()
    for key in keys:
        await pilot.press(key)
        await reads_done(app)  # the screen a key opened has its rows before the next key
        await pilot.pause()
    await until(pilot, lambda: marker in screen_text(app), what=marker)
    # Every read finished (a log viewer's follow thread runs for as long as it is open).
    await reads_done(app)
    await until(pilot, lambda: tables_settled(app), what="tables to size their columns")
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()


@pytest.mark.long(12)
@pytest.mark.parametrize("size, theme", VARIANTS,
                         ids=[f"{w}x{h}-{theme}" for (w, h), theme in VARIANTS])
def test_screens(snapshot, snapshot_app, monkeypatch: pytest.MonkeyPatch,
                 size: tuple[int, int], theme: str) -> None:
    """Every screen in one app, opened as a user would from Now: one app a variant (an app
    costs more to start than a screen costs to draw)."""
    from pytest_textual_snapshot import SVGImageExtension

    if theme == "mono":
        monkeypatch.setenv("NO_COLOR", "1")
    app = snapshot_app("dark" if theme == "mono" else theme)
    shots: dict[str, str] = {}

    async def visit() -> None:
        async with app.run_test(size=size) as pilot:
            await until(pilot, lambda: "transform" in screen_text(app), what="first paint")
            for name, (keys, marker) in SCREENS.items():
                await open_screen(app, pilot, keys, marker)
                shots[name] = app.export_screenshot(title=app.title, simplify=True)

    run_async(visit())
    snapshot = snapshot.use_extension(SVGImageExtension)
    differ = [name for name, svg in shots.items() if not snapshot(name=name) == svg]
    assert not differ, f"screens that differ from their snapshot: {differ}"
