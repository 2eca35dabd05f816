"""Loose ends between the runner, alerts and backfills: an alert about the runner itself, SLAs
the daemon cannot check, backfill state changes seen by an open TUI, and one idea of a DAG's
last scheduled date. Real runners, a real store, a real HTTP server, the real CLI."""
from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from app_support import run_async, screen_text, until
from conftest import flowtui, write
from daemon_support import alive, start, tasks, trigger, wait_for
from test_alerts import Hooks, hooks  # noqa: F401  (hooks is the shared server fixture)
from test_alerts_clock import Desk, desks  # noqa: F401  (desks is a fixture)
from test_edges_daemon import HOLD_LOCK, QuickDaemon, daemons  # noqa: F401  (a fixture)

from flowtui.app.acting import catch_up_lines
from flowtui.app.app import make_app
from flowtui.runner.config import load_config
from flowtui.runner.daemon import due_intervals, last_scheduled
from flowtui.runner.loader import load_folder
from flowtui.runner.sla import SlaWatch
from flowtui.store import Store


def query(home: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(home / "flowtui.db")
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


# -- an alert about the runner itself ---------------------------------------------------------
def _locked_while(home: Path, daemon: QuickDaemon, go: Path, seen: int, hold: float) -> None:
    """Hold the database's write lock while a task ends (so the runner must write), until the
    runner has said so ``seen`` times in all and ``hold`` seconds more have passed: an outage
    that long, then over."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(home / "flowtui.db")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        go.touch()
        wait_for(lambda: daemon.stderr().count("cannot write to the database") >= seen,
                 what="the runner to hit the lock")
        until_at = time.monotonic() + hold  # the outage must outlast alert_after: a duration
        wait_for(lambda: time.monotonic() >= until_at, what="the outage to last")
    finally:
        if holder.stdin is not None:
            holder.stdin.write("\n")
            holder.stdin.close()
        holder.wait(10)


def _degraded(home: Path) -> list[tuple]:
    return query(home, "SELECT id, dag_id, state, severity, summary FROM alerts WHERE kind = "
                       "'runner_degraded'")


def test_a_runner_alert_goes_to_every_policy_listing_it_and_comes_back_after_an_ack(
        home: Path, pipelines: Path, hooks: Hooks, daemons: list) -> None:
    (home / "flowtui.toml").write_text(f"""
[channels.ops]
type = "webhook"
url = "{hooks.url}/ops"
[channels.dagteam]
type = "webhook"
url = "{hooks.url}/dagteam"
[policies.platform]
on = ["runner_degraded"]
steps = [{{after = "0m", notify = ["ops"]}}]
[policies.team]
on = ["task_failed"]
steps = [{{after = "0m", notify = ["dagteam"]}}]
""")
    first, second = pipelines.parent / "go1", pipelines.parent / "go2"
    write(pipelines, "pair.yaml", f"""
        dag_id: pair
        alerts: [team]
        tasks:
          one: {{command: 'while [ ! -e {first} ]; do sleep 0.05; done'}}
          two: {{command: 'while [ ! -e {second} ]; do sleep 0.05; done'}}
    """)
    daemon = QuickDaemon(home, pipelines)
    daemons.append(daemon)
    trigger(home, pipelines, "pair")
    wait_for(lambda: all(t["state"] == "running" for t in tasks(home, "pair").values())
             and len(tasks(home, "pair")) == 2, what="both tasks running")

    _locked_while(home, daemon, first, seen=1, hold=1.0)
    alert = wait_for(lambda: _degraded(home), what="the runner_degraded alert")[0]
    assert alert[1:4] == ("", "open", "error"), alert
    assert "locked by another process" in alert[4], alert
    # The policy that lists the kind is paged; the DAG team's policy (task_failed) is not.
    sent = wait_for(lambda: hooks.to("/ops"), what="the page to ops")
    assert sent[0]["event"] == "trigger" and sent[0]["alert"]["kind"] == "runner_degraded"
    assert hooks.to("/dagteam") == []

    acked = flowtui("alerts", "ack", str(alert[0]), home=home)
    assert acked.returncode == 0, acked.stderr
    # A second long outage is news: the acked alert of the first does not swallow it.
    _locked_while(home, daemon, second, seen=2, hold=1.0)
    wait_for(lambda: _degraded(home)[0][2] == "open", what="the alert raised again")
    triggers = wait_for(lambda: (lambda t: t if len(t) == 2 else None)(
        [b for b in hooks.to("/ops") if b["event"] == "trigger"]), what="a second page")
    assert triggers[1]["alert"]["summary"] != triggers[0]["alert"]["summary"]
    assert hooks.to("/dagteam") == []
    assert daemon.proc.poll() is None, daemon.stderr()


# -- SLAs the runner checks ------------------------------------------------------------------
def test_an_sla_that_cannot_be_checked_is_said_once_and_an_unknown_finish_as_unknown(
        home: Path, pipelines: Path, desks: list) -> None:
    """What the runner's SLA check (``SlaWatch``) says, tick after tick of a driven clock."""
    for dag_id, within in (("far", "3650d"), ("slow", "1h"), ("soon", "2s")):
        write(pipelines, f"{dag_id}.yaml", f"""
            dag_id: {dag_id}
            paused: true
            sla: {{within: {within}}}
            tasks:
              work: {{command: 'true'}}
        """)
    # slow's history: one try that took ~9,500 years, so any prediction is beyond the clock.
    done = flowtui("run", "slow", home=home, pipelines=pipelines)
    assert done.returncode == 0, done.stderr
    conn = sqlite3.connect(home / "flowtui.db")
    with conn:
        conn.execute("UPDATE tries SET end_date = start_date + 3e11")
    conn.close()
    # Paused DAGs: the runs stay queued, and their SLAs are checked on every tick.
    trigger(home, pipelines, "far", "--date", "9999-12-29")
    trigger(home, pipelines, "slow")
    soon = trigger(home, pipelines, "soon")
    soon_from = query(home, "SELECT data_interval_end FROM dag_runs WHERE dag_id = 'soon' AND "
                            "run_id = ?", (soon,))[0][0]
    desk = Desk(home, pipelines)
    desks.append(desk)
    said: list[str] = []
    watch = SlaWatch(desk.alerts, said.append)
    dags = load_folder(pipelines).dags
    tick = desk.clock.now()
    watch.check(dags, tick)
    assert query(home, "SELECT 1 FROM alerts WHERE dag_id = 'soon'") == []
    # soon misses its deadline two ticks or more later: by then far was seen on every tick.
    while tick < soon_from + 2.0 + 1.0:
        tick += 1.0
        desk.move_to(tick)
        watch.check(dags, tick)
    assert query(home, "SELECT 1 FROM alerts WHERE kind = 'sla_miss' AND dag_id = 'soon'")
    lines = [line for line in said if "DAG 'far'" in line]
    assert len(lines) == 1, said
    assert "far.yaml" in lines[0] and "outside the years 1-9999" in lines[0] \
        and "its SLA is not checked" in lines[0], lines[0]
    summary = query(home, "SELECT summary FROM alerts WHERE kind = 'sla_at_risk' AND "
                          "dag_id = 'slow'")[0][0]
    assert summary.startswith("predicted to finish at unknown, after the deadline"), summary
    assert "None" not in summary


# -- backfill state changes ---------------------------------------------------------------
DAILY = """
dag_id: shop
schedule: "@daily"
start_date: 2026-01-01
tasks:
  load: {command: '%s'}
"""


def _backfill(home: Path, pipelines: Path, *extra: str) -> None:
    made = flowtui("backfill", "shop", "--start", "2026-03-01", "--end", "2026-03-03", *extra,
                   home=home, pipelines=pipelines)
    assert made.returncode == 0, made.stderr


def test_an_open_tui_shows_backfill_changes_made_from_the_cli_with_no_runner(
        home: Path, pipelines: Path) -> None:
    write(pipelines, "shop.yaml", DAILY % "true")
    _backfill(home, pipelines)

    def state_cell(app: Any) -> str:
        table = app.screen.table
        return str(table.get_row("1")[4]) if "1" in table.rows else ""

    async def go() -> None:
        app = make_app(load_config(home, pipelines), refresh_seconds=0.2)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("6")
            await until(pilot, lambda: "2026-03-01" in screen_text(app), what="the backfill")
            assert state_cell(app) == "running"
            for action, shown in (("pause", "paused"), ("resume", "running"),
                                  ("cancel", "cancelled")):
                done = await asyncio.to_thread(flowtui, "backfill", action, "1", home=home)
                assert done.returncode == 0, done.stderr
                await until(pilot, lambda s=shown: state_cell(app) == s, what=shown)

    run_async(go())
    events = query(home, "SELECT old_state, new_state, detail FROM events WHERE kind = "
                         "'backfill' ORDER BY id")
    assert events == [(None, "running", "backfill 1"), ("running", "paused", "backfill 1"),
                      ("paused", "running", "backfill 1"), ("running", "cancelled", "backfill 1")]


def test_a_backfill_cancelled_while_its_runner_is_dead_is_ended_by_the_next_one(
        home: Path, pipelines: Path, runners: list) -> None:
    write(pipelines, "shop.yaml", DAILY % "sleep 600" + "paused: true\n")  # backfills only
    first = start(runners, home, pipelines)
    _backfill(home, pipelines, "--parallelism", "1")
    pid = wait_for(lambda: (lambda r: r[0][0] if r and r[0][0] else None)(query(
        home, "SELECT pid FROM task_instances WHERE state = 'running'")),
        what="the first backfill run running")
    first.kill9()
    done = flowtui("backfill", "cancel", "1", home=home)
    assert done.returncode == 0, done.stderr
    assert "stopping 1 running run(s)" in done.stdout, done.stdout
    assert alive(pid)  # no runner yet: the request waits for one
    start(runners, home, pipelines)
    wait_for(lambda: query(home, "SELECT state FROM dag_runs WHERE backfill_id = 1") ==
             [("failed",)], what="the next runner to end the cancelled run")
    wait_for(lambda: not alive(pid), what="its task's process to be stopped")
    assert query(home, "SELECT state FROM backfills") == [("cancelled",)]


def test_a_backfill_that_finishes_writes_an_event(home: Path, pipelines: Path) -> None:
    write(pipelines, "shop.yaml", DAILY % "true")
    _backfill(home, pipelines, "--wait")
    assert query(home, "SELECT old_state, new_state, cause FROM events WHERE kind = "
                       "'backfill' ORDER BY id")[-1] == ("running", "done", "scheduler")


def test_a_backfill_id_beyond_any_integer_is_one_line(home: Path, pipelines: Path) -> None:
    write(pipelines, "shop.yaml", DAILY % "true")
    _backfill(home, pipelines)
    for action in ("pause", "resume", "cancel"):
        done = flowtui("backfill", action, "9" * 30, home=home)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip() == f"flowtui: error: no backfill {'9' * 30}; 'flowtui " \
            "backfill list' lists them", done.stderr


# -- the last scheduled date ----------------------------------------------------------------
def test_unpause_dry_run_the_dialog_and_the_runner_agree_on_the_catch_up_runs(
        home: Path, pipelines: Path, runners: list) -> None:
    today = dt.datetime.now(dt.timezone.utc).date()
    write(pipelines, "daily.yaml", f"""
        dag_id: daily
        schedule: "@daily"
        start_date: {today - dt.timedelta(days=9)}
        catchup: true
        paused: true
        tasks:
          a: {{command: 'true'}}
    """)
    dags = load_folder(pipelines).dags
    dag = dags["daily"]
    flowtui("dags", "list", home=home, pipelines=pipelines)  # the store knows the DAG
    store = Store.open(home / "flowtui.db")
    # The schedule already ran up to 4 days ago; backfill and manual runs are not the schedule.
    for days, kind in ((4, "scheduled"), (2, "backfill"), (1, "manual")):
        start_ts = dt.datetime.combine(today - dt.timedelta(days=days), dt.time(),
                                       dt.timezone.utc).timestamp()
        store.create_run(dag_id="daily", run_id=f"{kind}__{days}", run_type=kind,
                         logical_date=start_ts, data_interval_start=start_ts,
                         data_interval_end=start_ts + 86400, conf={}, state="success",
                         runner_id=None, tasks=[])
    expected = dt.datetime.combine(today - dt.timedelta(days=4), dt.time(),
                                   dt.timezone.utc).timestamp()
    assert last_scheduled(store, "daily") == expected
    due = [i.start for i in due_intervals(dag, expected, time.time())]
    assert len(due) == 3, due  # 3, 2 and 1 days ago
    lines = catch_up_lines(dag, store)
    assert lines[0].startswith("  it creates 3 scheduled run(s) now"), lines
    dry = flowtui("dags", "unpause", "daily", "--dry-run", home=home, pipelines=pipelines)
    assert dry.returncode == 0 and "would create 3 run(s)" in dry.stdout, dry.stdout
    store.close()
    start(runners, home, pipelines)
    assert flowtui("dags", "unpause", "daily", home=home, pipelines=pipelines).returncode == 0
    created = wait_for(lambda: (lambda r: r if len(r) == 4 else None)(query(
        home, "SELECT logical_date FROM dag_runs WHERE run_type = 'scheduled' ORDER BY "
              "logical_date")), what="the catch-up runs")
    assert [r[0] for r in created[1:]] == due
