"""Dialogs, the backfill dialog and screen, and toasts, driven headless on a real store."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from app_support import run_async, toasts, until
from conftest import flowtui, write
from helpers import run_dag
from test_app import query

from flowtui.app.acting import told
from flowtui.app.app import make_app
from flowtui.runner.actions import Outcome
from flowtui.runner.config import load_config
from flowtui.store.models import Run

PIPE = """
dag_id: shop
schedule: "@daily"
start_date: 2026-01-01
tasks:
  extract: {command: 'echo "Error: boom" >&2; exit 1'}
  load: {command: 'echo load', deps: [extract]}
"""


@pytest.fixture
def world(home: Path, pipelines: Path) -> tuple[Path, Path]:
    write(pipelines, "shop.yaml", PIPE)
    (home / "flowtui.toml").write_text("[pools]\nslow = 2\n")
    run_dag(home, pipelines, "shop")
    from flowtui.commands import sync
    from flowtui.runner.loader import load_folder
    from flowtui.store import Store

    sync(Store.open(home / "flowtui.db"), load_folder(pipelines))
    return home, pipelines


def app_for(world: tuple[Path, Path]) -> Any:
    home, pipelines = world
    return make_app(load_config(home, pipelines), refresh_seconds=0.2)


def painted(app: Any) -> str:
    """The screen as the terminal gets it (the modal over what lies beneath)."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def struck(app: Any) -> list[str]:
    """Text painted with strikethrough (what `[s]` in markup turns a label into)."""
    return [seg.text for strip in app.screen._compositor.render_strips()
            for seg in strip if seg.style is not None and seg.style.strike]


async def open_clear(app: Any, pilot: Any) -> None:
    await until(pilot, lambda: "extract" in painted(app), what="Now")
    await pilot.press("c")
    await until(pilot, lambda: "These 2 task(s)" in painted(app), what="the plan")


async def open_dags(app: Any, pilot: Any) -> None:
    await pilot.press("1")
    await until(pilot, lambda: "shop" in painted(app), what="the DAGs screen")


@pytest.mark.long(6)
def test_every_dialog_shows_its_keys_as_text(world) -> None:
    expected = {"c": ["Clear [y]", "Cancel [n]", "downstream [d]", "upstream [u]",
                      "failed only [f]", "[y]/[enter] clear"],
                "m": ["success [s]", "failed [f]", "skipped [k]", "[s] success",
                      "downstream too [d]"]}

    async def go() -> None:
        app = app_for(world)
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: "extract" in painted(app), what="Now")
            for key, labels in expected.items():
                await pilot.press(key)
                await until(pilot, lambda: "task(s)" in painted(app), what=f"dialog {key}")
                for label in labels:
                    assert label in painted(app), (key, label, painted(app))
                assert not struck(app), struck(app)
                await pilot.press("escape")
            await open_dags(app, pilot)
            for key, labels in {"t": ["Trigger [enter]", "Cancel [esc]"],
                                "b": ["Preview [enter]", "Start [enter]", "[enter] preview"],
                                "p": ["Pause [y]", "[y]/[enter] pause"]}.items():
                await pilot.press(key)
                await until(pilot, lambda: "Cancel [" in painted(app), what=f"dialog {key}")
                for label in labels:
                    assert label in painted(app), (key, label, painted(app))
                assert not struck(app), struck(app)
                await pilot.press("escape")

    run_async(go())


def test_enter_in_the_clear_dialog_confirms_and_never_toggles(world) -> None:
    home, _ = world

    async def go() -> None:
        app = app_for(world)
        async with app.run_test(size=(100, 30)) as pilot:
            await open_clear(app, pilot)
            box = app.screen.query_one("#downstream")
            box.focus()
            await pilot.pause()
            assert app.focused is box
            # Monochrome: the state is in the text, not in a colour.
            assert "[x] downstream [d]" in painted(app)
            assert "[ ] upstream [u]" in painted(app)
            await pilot.press("enter")
            await until(pilot, lambda: query(home, "SELECT count(*) FROM audit_log")[0][0] == 1,
                        what="the clear")

    run_async(go())
    assert query(home, "SELECT task_id FROM audit_log") == [("extract,load",)]
    assert dict(query(home, "SELECT task_id, state FROM task_instances")) == {
        "extract": "none", "load": "none"}


def test_checkbox_state_reads_from_text_alone(world) -> None:
    async def go() -> None:
        app = app_for(world)
        async with app.run_test(size=(100, 30)) as pilot:
            await open_clear(app, pilot)
            await pilot.press("d")
            await until(pilot, lambda: "These 1 task(s)" in painted(app), what="the new plan")
            assert "[ ] downstream [d]" in painted(app)
            await pilot.press("space")  # the focused box (downstream) goes back on
            await until(pilot, lambda: "These 2 task(s)" in painted(app), what="the plan")
            assert "[x] downstream [d]" in painted(app)

    run_async(go())


def test_backfill_dialog_fits_80x24_with_a_60_run_preview(world) -> None:
    home, _ = world

    async def go() -> None:
        app = app_for(world)
        async with app.run_test(size=(80, 24)) as pilot:
            await open_dags(app, pilot)
            await pilot.press("b")
            await until(pilot, lambda: "Backfill shop" in painted(app), what="the dialog")
            dialog = app.screen
            dialog.query_one("#pool").value = "nosuch"
            dialog.query_one("#start").value = "2026-01-01"
            dialog.query_one("#end").value = "2026-03-01"
            await pilot.press("enter")
            await until(pilot, lambda: "pool 'nosuch' is not defined" in painted(app),
                        what="the inline error")
            assert dialog.query_one("#start-backfill").disabled
            dialog.query_one("#pool").value = "slow"
            await pilot.press("enter")
            await until(pilot, lambda: "creates 60 run(s): 2026-01-01 … 2026-03-01"
                        in painted(app), what="the preview")
            screen = app.screen.region
            for name in ("start", "end", "parallelism", "order", "reprocess", "pool",
                         "count", "backfill-preview", "error", "cancel", "preview",
                         "start-backfill"):
                region = dialog.query_one(f"#{name}").region
                assert region.area and screen.contains_region(region), (name, region)
            text = painted(app)
            for label in ("start", "end", "parallelism", "order", "reprocess", "pool",
                          "Start [enter]", "Cancel [esc]", "[enter] start these 60 run(s)"):
                assert label in text, (label, text)
            await pilot.press("enter")  # the confirm step: Enter starts
            await until(pilot, lambda: query(home, "SELECT count(*) FROM backfills")[0][0],
                        what="the backfill")

    run_async(go())
    assert query(home, "SELECT pool, state FROM backfills") == [("slow", "running")]
    assert query(home, "SELECT DISTINCT pool FROM task_instances WHERE run_id LIKE "
                       "'backfill%'") == [("slow",)]


def test_backfills_screen_pauses_resumes_and_cancels(world) -> None:
    home, pipelines = world
    made = flowtui("backfill", "shop", "--start", "2026-03-01", "--end", "2026-03-03",
                   home=home, pipelines=pipelines)
    assert made.returncode == 0, made.stderr

    def state() -> str:
        return query(home, "SELECT state FROM backfills")[0][0]

    async def go() -> None:
        app = app_for(world)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("6")
            await until(pilot, lambda: "0/3" in painted(app), what="the backfills screen")
            assert "2026-03-01 … 2026-03-03" in painted(app)
            for key, named, after in (("p", "Pause backfill 1 of shop", "paused"),
                                      ("R", "Resume backfill 1 of shop", "running"),
                                      ("u", None, None),
                                      ("x", "Cancel backfill 1 of shop", "cancelled")):
                await pilot.press(key)
                if named is None:  # resume of a running backfill: refused with a reason
                    await until(pilot, lambda: "Resume backfill" in painted(app), what="dialog")
                    await pilot.press("y")
                    await until(pilot, lambda: any("cannot be resumed" in t for t in toasts(app)),
                                what="the refusal")
                    continue
                await until(pilot, lambda n=named: n in painted(app), what=named)
                await pilot.press("enter")
                await until(pilot, lambda a=after: state() == a, what=after)
                await until(pilot, lambda a=after: a in painted(app), what=f"{after} shown")

    run_async(go())
    assert query(home, "SELECT count(*) FROM dag_runs WHERE backfill_id IS NOT NULL") == [(0,)]
    actions = [a[0] for a in query(home, "SELECT action FROM audit_log WHERE action LIKE "
                                         "'backfill_%' ORDER BY id")]
    assert actions == ["backfill_pause", "backfill_resume", "backfill_cancel"]


def test_unpause_dialog_lists_the_catch_up_runs(home: Path, pipelines: Path) -> None:
    start = (dt.date.today() - dt.timedelta(days=4)).isoformat()
    write(pipelines, "daily.yaml", f"""
        dag_id: daily
        schedule: "@daily"
        start_date: {start}
        catchup: true
        tasks:
          a: {{command: 'echo a'}}
        """)
    assert flowtui("dags", "pause", "daily", home=home, pipelines=pipelines).returncode == 0
    dry = flowtui("dags", "unpause", "daily", "--dry-run", home=home, pipelines=pipelines)
    dates = [line.split("logical date ")[1].split("  ")[0] for line in dry.stdout.splitlines()
             if "logical date" in line]
    assert len(dates) >= 3, dry.stdout

    async def go() -> None:
        app = make_app(load_config(home, pipelines), refresh_seconds=0.2)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("1")
            await until(pilot, lambda: "paused" in painted(app), what="DAGs")
            await pilot.press("p")
            await until(pilot, lambda: "Unpause daily?" in painted(app), what="the dialog")
            text = painted(app)
            assert f"it creates {len(dates)} scheduled run(s) now" in text, text
            for date in dates:
                assert date[:16] in text, (date, text)
            await pilot.press("n")

    run_async(go())


def test_toasts_say_what_became_of_an_action(world) -> None:
    async def go() -> None:
        app = app_for(world)
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: "extract" in painted(app), what="Now")
            await pilot.press("m")
            await until(pilot, lambda: "task(s) change state" in painted(app), what="mark")
            await pilot.press("s")
            await until(pilot, lambda: toasts(app), what="a toast")
            said = toasts(app)[-1]
            assert said.startswith("Mark success sent to shop.extract (run manual "), said
            assert "no runner is alive" in said, said

    run_async(go())


def test_toast_words_for_each_outcome() -> None:
    run = Run(*([None] * len(Run.__dataclass_fields__)))  # type: ignore[arg-type]
    run.dag_id, run.run_id = "crunch", "manual__2026-11-21T10:45:32+00:00"
    kill = told(Outcome("kill", run, ["transform"], "runner 3", "kill: transform"), {})
    assert kill == ("Kill sent to crunch.transform (run manual 11-21 10:45); the runner is "
                    "stopping its processes", "information")
    queued = told(Outcome("kill", run, ["transform"], "runner 3",
                          "queued; the runner has not confirmed it yet"), {})
    assert queued[0].endswith("queued: no runner confirmed it yet") and queued[1] == "warning"
    noop = told(Outcome("mark", run, ["t"], "store", "t is already success; nothing changed"),
                {"state": "success"})
    assert noop[0].endswith(": t is already success; nothing changed"), noop
