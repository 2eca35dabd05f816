"""Alerts, deliveries and SLAs on a driven clock: escalation steps, delivery retries and SLA
deadlines come when the clock is moved, not after real seconds. Real parts: ``Alerts`` and the
``Sender`` thread in process, a real SQLite file, a real HTTP server on 127.0.0.1, real runs."""
from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import flowtui, write
from daemon_support import tasks, wait_for
from test_alerts import PD_SECRET, SLACK_SECRET, Hooks, configure, hooks, query  # noqa: F401

from flowtui.runner.alerting import Alerts, parse_alerting, set_alert_state
from flowtui.runner.clock import ManualClock
from flowtui.runner.loader import load_folder
from flowtui.runner.notify import Sender
from flowtui.runner.sla import SlaWatch
from flowtui.store import Store


BACKOFF = 30.0  # a retry never comes by the real time a test takes, only by moving the clock


class Desk:
    """What the runner holds for alerting, in this process, on a ``ManualClock``."""

    def __init__(self, home: Path, pipelines: Path) -> None:
        self.clock = ManualClock()
        toml = home / "flowtui.toml"
        raw = tomllib.loads(toml.read_text()) if toml.exists() else {}
        self.config = parse_alerting(raw)
        assert self.config.errors == []
        self.store = Store.open(home / "flowtui.db", now=self.clock.now)
        self.sender = Sender(home / "flowtui.db", self.config, clock=self.clock,
                             backoff=BACKOFF)
        self.armed: list[float] = []  # the times the runner is asked to set a timer for
        self.alerts = Alerts(self.store, self.config, load_folder(pipelines).dags,
                             self.sender.wake, self.armed.append)
        self.sender.start()

    def move_to(self, when: float) -> None:
        """Time jumps; the sender, asleep until its next retry, is told."""
        self.clock.set(when)
        self.sender.wake()

    def close(self) -> None:
        self.sender.stop()
        self.sender.join(10)
        self.store.close()


@pytest.fixture
def desks() -> Iterator[list[Desk]]:
    made: list[Desk] = []
    yield made
    for desk in made:
        desk.close()


def desk_for(home: Path, pipelines: Path, env: dict[str, str], desks: list[Desk],
             monkeypatch: pytest.MonkeyPatch) -> Desk:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    desk = Desk(home, pipelines)
    desks.append(desk)
    return desk


SHOP = """
    dag_id: shop
    alerts: [oncall]
    tasks:
      load: {command: 'exit 3'}
"""


def test_escalation_retry_ack_and_resolve_on_the_clock(
        home: Path, pipelines: Path, hooks: Hooks, desks: list[Desk],
        monkeypatch: pytest.MonkeyPatch) -> None:
    env = configure(home, hooks, escalate="2s")
    write(pipelines, "a.yaml", SHOP)
    desk = desk_for(home, pipelines, env, desks, monkeypatch)
    alerts = desk.alerts
    alert_id = alerts.raise_alert("task_failed", "shop", "manual_1", "load",
                                  "exited 3: warehouse refused")
    assert alert_id is not None
    raised = query(home, "SELECT created_at FROM alerts")[0][0]
    # The first step is sent at once; the next is armed two seconds on, nothing sooner.
    wait_for(lambda: hooks.to("/slack"), what="the slack message")
    slack = hooks.to("/slack")[0]
    assert list(slack) == ["text"]
    assert "task_failed" in slack["text"] and "shop" in slack["text"]
    assert "load" in slack["text"] and "exited 3" in slack["text"]
    assert alerts.next_escalation() == pytest.approx(raised + 2.0)
    # Raising it again while open changes nothing.
    assert alerts.raise_alert("task_failed", "shop", "manual_1", "load", "again") is None

    # The 500 from /flaky is retried after the backoff on the clock, and only then.
    wait_for(lambda: query(home, "SELECT status, attempts FROM deliveries WHERE channel = "
                                 "'flaky'") == [("pending", 1)], what="the first attempt")
    retry_at = query(home, "SELECT next_attempt_at FROM deliveries WHERE channel = 'flaky'"
                     )[0][0]
    first_at = query(home, "SELECT at FROM delivery_attempts WHERE ok = 0")[0][0]
    assert retry_at == pytest.approx(first_at + BACKOFF)
    assert len(hooks.to("/flaky")) == 1
    desk.move_to(retry_at)
    wait_for(lambda: query(home, "SELECT status, attempts FROM deliveries WHERE channel = "
                                 "'flaky'") == [("sent", 2)], what="the retry of a 500")
    assert len(hooks.to("/flaky")) == 2

    # Un-acked: the pager step fires when its time comes, not a moment before.
    assert alerts.escalate(raised + 1.9) == pytest.approx(raised + 2.0)
    assert hooks.to("/pd") == [] and query(home, "SELECT level FROM alerts") == [(1,)]
    desk.move_to(raised + 2.0)
    assert alerts.escalate() is None  # the last step: nothing left to arm
    wait_for(lambda: hooks.to("/pd"), what="the page")
    paged_at = query(home, "SELECT created_at FROM deliveries WHERE channel = 'pager'")[0][0]
    assert 2.0 <= paged_at - raised < 3.5
    page = hooks.to("/pd")[0]
    assert page["routing_key"] == PD_SECRET and page["event_action"] == "trigger"
    assert page["dedup_key"] == f"flowtui-{alert_id}"
    assert page["payload"]["severity"] == "error" and page["payload"]["class"] == "task_failed"
    assert {"summary", "source", "component", "group", "custom_details"} <= set(page["payload"])

    # Ack: the page is acknowledged with the same dedup key.
    set_alert_state(desk.store, alert_id, "acked", user="oncall")
    desk.sender.wake()
    wait_for(lambda: len(hooks.to("/pd")) == 2, what="the acknowledge")
    assert hooks.to("/pd")[1] == {"routing_key": PD_SECRET, "event_action": "acknowledge",
                                   "dedup_key": f"flowtui-{alert_id}"}
    # A later success resolves the alert and the page.
    alerts.resolve_matching("shop", "manual_1", "load", None, ("task_failed",))
    assert query(home, "SELECT state FROM alerts") == [("resolved",)]
    wait_for(lambda: len(hooks.to("/pd")) == 3, what="the PagerDuty resolve")
    assert hooks.to("/pd")[2]["event_action"] == "resolve"
    listed = json.loads(flowtui("alerts", "list", "--all", "--json", home=home).stdout)
    assert set(listed[0]) >= {"id", "kind", "dag_id", "run_id", "task_id", "state",
                              "severity", "level", "created_at"}
    assert listed[0]["level"] == 2
    # The secrets never reach the database or the CLI.
    desk.close()
    desks.remove(desk)
    blob = b"".join(p.read_bytes() for p in home.glob("flowtui.db*"))
    blob += flowtui("alerts", "list", "--all", "--json", home=home).stdout.encode()
    assert SLACK_SECRET.encode() not in blob and PD_SECRET.encode() not in blob


def test_an_acked_alert_does_not_escalate(home: Path, pipelines: Path, hooks: Hooks,
                                          desks: list[Desk],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    env = configure(home, hooks, escalate="3s")
    hooks.failures.clear()  # no retry pending: the queue drains at once
    write(pipelines, "a.yaml", SHOP)
    desk = desk_for(home, pipelines, env, desks, monkeypatch)
    alert_id = desk.alerts.raise_alert("task_failed", "shop", "manual_1", "load", "exited 1")
    assert alert_id is not None
    raised = query(home, "SELECT created_at FROM alerts")[0][0]
    set_alert_state(desk.store, alert_id, "acked", user="oncall")
    assert desk.alerts.next_escalation() is None  # nothing for the runner to arm
    desk.move_to(raised + 4.0)  # past the escalation delay: nothing may be paged
    assert desk.alerts.escalate() is None
    wait_for(lambda: query(home, "SELECT count(*) FROM deliveries WHERE status = 'pending'"
                           ) == [(0,)], what="the sender to finish")
    assert hooks.to("/pd") == []
    assert query(home, "SELECT state, level FROM alerts") == [("acked", 1)]


def test_escalation_is_armed_for_the_earliest_step_of_an_open_alert(
        home: Path, pipelines: Path, hooks: Hooks, desks: list[Desk],
        monkeypatch: pytest.MonkeyPatch) -> None:
    env = configure(home, hooks, escalate="1h")
    write(pipelines, "a.yaml", SHOP)
    desk = desk_for(home, pipelines, env, desks, monkeypatch)
    alerts, start = desk.alerts, desk.clock.now()
    assert alerts.next_escalation() is None and alerts.escalate(start) is None
    late = alerts.raise_alert("task_failed", "shop", "r1", "load", "x", now=start + 60)
    early = alerts.raise_alert("task_failed", "shop", "r2", "load", "x", now=start)
    later = alerts.raise_alert("task_failed", "shop", "r3", "load", "x", now=start + 120)
    assert late is not None and early is not None and later is not None
    # A timer for each step that comes before every one armed so far, and no other.
    assert desk.armed == pytest.approx([start + 3660, start + 3600])
    assert alerts.next_escalation() == pytest.approx(start + 3600)
    set_alert_state(desk.store, early, "acked", user="oncall")
    assert alerts.next_escalation() == pytest.approx(start + 3660)
    # Each timer's escalate fires what is due and arms the next step.
    assert alerts.escalate(start + 3600) == pytest.approx(start + 3660)
    assert alerts.escalate(start + 3660) == pytest.approx(start + 3720)
    assert alerts.escalate(start + 3720) is None
    assert desk.armed == pytest.approx([start + 3660, start + 3600, start + 3660, start + 3720])
    assert query(home, "SELECT id, state, level FROM alerts ORDER BY id") == [
        (late, "open", 2), (early, "acked", 1), (later, "open", 2)]


def test_sla_at_risk_before_the_deadline_and_missed_at_it(
        home: Path, pipelines: Path, hooks: Hooks, desks: list[Desk], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    env = configure(home, hooks, escalate="1h")
    go = tmp_path / "go"
    go.touch()
    write(pipelines, "a.yaml", f"""
        dag_id: report
        alerts: [oncall]
        sla: {{within: 3s}}
        tasks:
          build: {{command: 'while [ ! -e {go} ]; do sleep 0.05; done'}}
    """)
    # History: build takes 4 s.
    assert flowtui("run", "report", home=home, pipelines=pipelines).returncode == 0
    conn_rows = query(home, "SELECT count(*) FROM tries WHERE state = 'success'")
    assert conn_rows == [(1,)]
    _update(home, "UPDATE tries SET end_date = start_date + 4")
    go.unlink()
    running = subprocess.Popen(
        [sys.executable, "-P", "-m", "flowtui", "--home", str(home), "--pipelines",
         str(pipelines), "run", "report"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: tasks(home, "report").get("build", {}).get("state") == "running",
                 what="the second run's build to run")
        run_id, started = query(home, "SELECT run_id, start_date FROM dag_runs WHERE state = "
                                      "'running'")[0]
        deadline = started + 3.0
        desk = desk_for(home, pipelines, env, desks, monkeypatch)
        said: list[str] = []
        watch = SlaWatch(desk.alerts, said.append)
        dags = load_folder(pipelines).dags
        watch.check(dags, desk.clock.now())  # predicted from the 4 s history
        at_risk = query(home, "SELECT created_at, summary FROM alerts WHERE kind = "
                              "'sla_at_risk' AND run_id = ?", run_id)
        assert at_risk and at_risk[0][0] < deadline
        assert "critical path: build" in at_risk[0][1]
        assert query(home, "SELECT 1 FROM alerts WHERE kind = 'sla_miss'") == []
        watch.check(dags, deadline - 0.01)
        assert query(home, "SELECT 1 FROM alerts WHERE kind = 'sla_miss'") == []
        desk.move_to(deadline)
        watch.check(dags, desk.clock.now())
        missed = query(home, "SELECT created_at FROM alerts WHERE kind = 'sla_miss' AND "
                             "run_id = ?", run_id)[0][0]
        assert deadline <= missed < deadline + 1.5
        watch.check(dags, deadline + 1.0)  # each verdict is raised once
        assert query(home, "SELECT count(*) FROM alerts") == [(2,)]
        wait_for(lambda: hooks.to("/jira"), what="the incident webhook")
        incident = [b for b in hooks.to("/jira") if b["alert"]["kind"] == "sla_miss"]
        assert incident and incident[0]["event"] == "trigger"
        assert set(incident[0]["alert"]) >= {"id", "kind", "dag_id", "run_id", "severity",
                                             "level", "summary", "state"}
        sla = json.loads(flowtui("sla", "--json", home=home, pipelines=pipelines).stdout)
        assert {s["run_id"] for s in sla} >= {run_id}
        assert said == []
    finally:
        go.touch()
        running.wait(30)


def _update(home: Path, sql: str) -> None:
    import sqlite3

    conn = sqlite3.connect(home / "flowtui.db")
    with conn:
        conn.execute(sql)
    conn.close()
