"""Alerts with a real runner and a real HTTP server on 127.0.0.1 (``Hooks``, shared by the
other alert tests)."""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import flowtui, write
from daemon_support import Runner, wait_for

SLACK_SECRET = "xoxb-SLACKSECRET-4242"
PD_SECRET = "R0UTINGKEY-SECRET-9999"


class Hooks:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict, float]] = []
        self.failures: dict[str, int] = {"/flaky": 1}
        self.lock = threading.Lock()
        self.hang_marker: Path | None = None  # touched when a send to /hang arrives
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                path = self.path.split("?")[0]
                with hooks.lock:
                    hooks.calls.append((path, body, time.time()))
                    fail = hooks.failures.get(path, 0)
                    if fail:
                        hooks.failures[path] = fail - 1
                if path == "/hang":
                    if hooks.hang_marker is not None:
                        hooks.hang_marker.touch()
                    time.sleep(20)
                self.send_response(500 if fail else 202)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # A short poll interval: shutting the server down at a test's end takes that long.
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def to(self, path: str) -> list[dict]:
        with self.lock:
            return [body for p, body, _ in self.calls if p == path]


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    server = Hooks()
    yield server
    server.server.shutdown()


def configure(home: Path, hooks: Hooks, slack_path: str = "/slack", escalate: str = "2s") -> dict:
    (home / "flowtui.toml").write_text(f"""
[channels.slack]
type = "slack"
url = "env:SLACK_URL"
[channels.pager]
type = "pagerduty"
routing_key = "env:PD_KEY"
url = "{hooks.url}/pd"
[channels.jira]
type = "webhook"
url = "{hooks.url}/jira"
[channels.flaky]
type = "webhook"
url = "{hooks.url}/flaky"
[policies.oncall]
on = ["task_failed", "sla_miss", "sla_at_risk", "zombie", "hung", "circuit_open"]
steps = [{{after = "0m", notify = ["slack", "flaky"]}}, {{after = "{escalate}", notify = ["pager"]}}]
on_sla_miss = ["jira"]
""")
    return {"SLACK_URL": f"{hooks.url}{slack_path}?token={SLACK_SECRET}", "PD_KEY": PD_SECRET}


def query(home: Path, sql: str, *params: object) -> list[tuple]:
    conn = sqlite3.connect(home / "flowtui.db")
    rows = conn.execute(sql, params).fetchall()
    conn.close()
    return rows


def start(home: Path, pipelines: Path, env: dict, monkeypatch: pytest.MonkeyPatch) -> Runner:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Runner(home, pipelines)


def test_a_failed_task_alerts_and_an_ack_and_a_success_reach_the_channels(
        home: Path, pipelines: Path, hooks: Hooks, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner end to end; escalation, retries and their timing run on a driven clock in
    test_alerts_clock.py."""
    env = configure(home, hooks, escalate="1h")
    hooks.failures.clear()
    flag = tmp_path / "fixed"
    write(pipelines, "a.yaml", f"""
        dag_id: shop
        alerts: [oncall]
        tasks:
          load: {{command: '[ -e {flag} ] || {{ echo "warehouse refused"; exit 3; }}'}}
    """)
    runner = start(home, pipelines, env, monkeypatch)
    try:
        assert flowtui("trigger", "shop", home=home, pipelines=pipelines).returncode == 0
        wait_for(lambda: hooks.to("/slack"), what="the slack message")
        slack = hooks.to("/slack")[0]
        assert list(slack) == ["text"]
        assert "task_failed" in slack["text"] and "shop" in slack["text"]
        assert "load" in slack["text"] and "exited 3" in slack["text"]
        alert_id = query(home, "SELECT id FROM alerts")[0][0]
        wait_for(lambda: hooks.to("/flaky"), what="the webhook")
        assert hooks.to("/flaky")[0]["event"] == "trigger"
        assert hooks.to("/flaky")[0]["alert"]["id"] == alert_id
        # Ack from the CLI: the runner is woken and tells the channels that were paged.
        ack = flowtui("alerts", "ack", str(alert_id), home=home)
        assert ack.returncode == 0, ack.stderr
        wait_for(lambda: len(hooks.to("/flaky")) == 2, what="the acknowledge")
        assert hooks.to("/flaky")[1]["event"] == "acknowledge"
        assert query(home, "SELECT state, acked_by IS NOT NULL FROM alerts") == [("acked", 1)]
        # A later success resolves the alert, and the channels hear of it.
        flag.write_text("ok")
        assert flowtui("clear", "shop", "latest", "load", "--yes", home=home,
                       pipelines=pipelines).returncode == 0
        wait_for(lambda: query(home, "SELECT state FROM alerts")[0][0] == "resolved",
                 what="the resolve")
        wait_for(lambda: len(hooks.to("/flaky")) == 3, what="the webhook resolve")
        assert hooks.to("/flaky")[2]["event"] == "resolve"
        listed = json.loads(flowtui("alerts", "list", "--all", "--json", home=home).stdout)
        assert set(listed[0]) >= {"id", "kind", "dag_id", "run_id", "task_id", "state",
                                  "severity", "level", "created_at"}
        assert listed[0]["level"] == 1 and listed[0]["state"] == "resolved"
        assert hooks.to("/pd") == []  # its step is an hour away
    finally:
        runner.stop()
    # The secrets never reach the database, the runner's output, or the CLI.
    blob = b"".join(p.read_bytes() for p in home.glob("flowtui.db*"))
    blob += (home / "runner.out").read_bytes()
    blob += flowtui("alerts", "list", "--all", "--json", home=home).stdout.encode()
    blob += flowtui("dags", "check", home=home, pipelines=pipelines).stdout.encode()
    assert SLACK_SECRET.encode() not in blob and PD_SECRET.encode() not in blob


def test_a_hanging_endpoint_does_not_slow_the_runner(home: Path, pipelines: Path, hooks: Hooks,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    env = configure(home, hooks, slack_path="/hang")
    # `a` ends only once the failure's page has reached the endpoint, which then hangs: b and c
    # run while the send is under way, whatever the machine's load.
    hooks.hang_marker = home / "paged"
    write(pipelines, "a.yaml", f"""
        dag_id: shop
        alerts: [oncall]
        tasks:
          breaks: {{command: 'exit 1'}}
          a: {{command: 'while [ ! -e {hooks.hang_marker} ]; do sleep 0.01; done',
              deps: [breaks], trigger_rule: all_done}}
          b: {{command: 'true', deps: [a]}}
          c: {{command: 'true', deps: [b]}}
    """)
    runner = start(home, pipelines, env, monkeypatch)
    try:
        flowtui("trigger", "shop", home=home, pipelines=pipelines)
        wait_for(lambda: query(home, "SELECT state FROM dag_runs") == [("success",)], 15,
                 "the run")
        assert len(hooks.to("/hang")) == 1  # the send is under way, hanging
        ends = dict(query(home, "SELECT task_id, end_date FROM tries"))
        starts = dict(query(home, "SELECT task_id, start_date FROM tries"))
        assert starts["b"] - ends["a"] < 0.05 and starts["c"] - ends["b"] < 0.05
    finally:
        runner.stop()


def test_bad_alert_config(home: Path, pipelines: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(pipelines, "ok.yaml", "dag_id: ok\ntasks:\n  t: {command: 'true'}\n")
    write(pipelines, "uses.yaml", "dag_id: uses\nalerts: [nope]\ntasks:\n  t: {command: 'true'}\n")
    (home / "flowtui.toml").write_text("""
[channels.slack]
type = "slack"
url = "env:FLOWTUI_TEST_MISSING_VAR"
[channels.chat]
type = "telegram"
url = "http://127.0.0.1:9/"
[policies.oncall]
steps = [{after = "0m", notify = ["pagr"]}]
""")
    check = flowtui("dags", "check", home=home, pipelines=pipelines)
    assert check.returncode == 1
    out = check.stdout
    assert "channels.slack.url (env:FLOWTUI_TEST_MISSING_VAR is not set)" in out
    assert "channels.chat.type: unknown channel type 'telegram'" in out
    assert "policies.oncall.steps[0].notify: unknown channel 'pagr'" in out
    assert "alerts: unknown policy 'nope'" in out
    # The runner keeps running the DAGs the bad config does not touch.
    runner = Runner(home, pipelines)
    try:
        flowtui("trigger", "ok", home=home, pipelines=pipelines)
        wait_for(lambda: query(home, "SELECT state FROM dag_runs WHERE dag_id = 'ok'") ==
                 [("success",)], what="an unaffected DAG")
    finally:
        runner.stop()
    (home / "flowtui.toml").write_text("[channels.slack\ntype = 'slack'\n")
    broken = flowtui("dags", "list", home=home, pipelines=pipelines)
    assert broken.returncode == 2 and broken.stderr.count("\n") == 1
    assert "flowtui.toml" in broken.stderr and "malformed TOML" in broken.stderr


def test_hung_tasks_and_the_circuit_breaker_raise_their_alerts(
        home: Path, pipelines: Path, hooks: Hooks, monkeypatch: pytest.MonkeyPatch) -> None:
    env = configure(home, hooks, escalate="1h")
    write(pipelines, "a.yaml", """
        dag_id: stuck
        alerts: [oncall]
        circuit_breaker: {consecutive_failures: 1}
        tasks:
          silent: {command: 'sleep 30', heartbeat_timeout: 1s, kill_grace: 1s}
    """)
    runner = start(home, pipelines, env, monkeypatch)
    try:
        flowtui("trigger", "stuck", home=home, pipelines=pipelines)
        wait_for(lambda: {r[0] for r in query(home, "SELECT kind FROM alerts")} >= {
            "hung", "task_failed", "circuit_open"}, 15, "hung, failed and circuit alerts")
        assert query(home, "SELECT paused FROM dags WHERE dag_id = 'stuck'") == [(1,)]
        circuit = query(home, "SELECT severity, run_id, summary FROM alerts WHERE kind = "
                              "'circuit_open'")[0]
        assert circuit[0] == "critical" and circuit[1] == "" and "circuit breaker" in circuit[2]
        wait_for(lambda: len(hooks.to("/slack")) >= 3, what="their messages")
    finally:
        runner.stop()
