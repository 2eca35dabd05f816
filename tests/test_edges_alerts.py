"""Alert delivery at the edges: an endpoint that drips bytes or a command that hangs holds only
its own channel and fails at its total deadline; alert ids and SLAs no clock can hold give one
line, never a traceback. The runner's sender in process on a driven clock, real HTTP servers on
127.0.0.1, the real CLI."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from conftest import flowtui, write
from daemon_support import alive, wait_for
from test_alerts import Hooks, hooks, query  # noqa: F401  (hooks is the shared server fixture)
from test_alerts_clock import BACKOFF, Desk, desks  # noqa: F401  (desks is a fixture)

DRIP_SECONDS = 60  # far longer than any deadline under test; ends early when the test stops


class Drip(Hooks):
    """Answers every POST with a status line and headers at once, then one body byte a second
    of a body that never completes: each read succeeds, so only a total deadline ends it."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[float] = []
        self.stop = threading.Event()
        drip = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                drip.started.append(time.time())
                self.send_response(200)
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                for _ in range(DRIP_SECONDS):
                    try:
                        self.wfile.write(b".")
                        self.wfile.flush()
                    except OSError:
                        return  # the sender gave up on us, as it should
                    if drip.stop.wait(1.0):
                        return

            def log_message(self, *args: object) -> None:
                pass

        self.server.RequestHandlerClass = Handler  # the shared server, answering the drip way


@pytest.fixture
def drip() -> Iterator[Drip]:
    server = Drip()
    yield server
    server.stop.set()
    server.server.shutdown()
    server.server.server_close()


def page_both(home: Path, pipelines: Path, hooks: Hooks, slow: str, desks: list[Desk]) -> Desk:
    """A channel ``slow`` (its table given) and a healthy ``fast`` one, both paged at once for
    a failed task, by the runner's alerting and sender on a driven clock. The slow one comes
    first: one sender working through deliveries in turn would be stuck on it, never reaching
    the other."""
    (home / "flowtui.toml").write_text(f"""{slow}
[channels.fast]
type = "webhook"
url = "{hooks.url}/fast"
[policies.oncall]
steps = [{{after = "0m", notify = ["slow", "fast"]}}]
""")
    write(pipelines, "a.yaml", """
        dag_id: shop
        alerts: [oncall]
        tasks:
          load: {command: 'exit 1'}
    """)
    desk = Desk(home, pipelines)
    desks.append(desk)
    assert desk.alerts.raise_alert("task_failed", "shop", "manual_1", "load", "exited 1")
    return desk


def attempts(home: Path, channel: str) -> list[tuple]:
    return query(home, "SELECT a.at, a.ok, a.detail FROM delivery_attempts a JOIN deliveries d "
                       "ON d.id = a.delivery_id WHERE d.channel = ? ORDER BY a.id", channel)


def test_a_dripping_endpoint_holds_only_its_own_channel(home: Path, pipelines: Path,
                                                         hooks: Hooks, drip: Drip,
                                                         desks: list[Desk]) -> None:
    desk = page_both(home, pipelines, hooks, f"""
[channels.slow]
type = "webhook"
url = "{drip.url}/drip"
timeout = "3s"
""", desks)
    wait_for(lambda: drip.started, 15, "the slow endpoint to be called")
    wait_for(lambda: query(home, "SELECT status FROM deliveries WHERE channel = 'fast'") ==
             [("sent",)], 10, "the healthy channel's delivery")
    fast_at = attempts(home, "fast")[0][0]
    assert len(hooks.to("/fast")) == 1
    # The slow one ends at its total deadline, failed, and is retried after a backoff.
    wait_for(lambda: attempts(home, "slow"), 15, "the slow attempt to end")
    slow_at, ok, detail = attempts(home, "slow")[0]
    # Sent while the drip was still going (a sender stuck behind it would send after its 3 s
    # deadline): a bound that holds however loaded the machine is.
    assert fast_at < slow_at
    assert not ok and detail == "no complete answer within 3s from http://127.0.0.1/…"
    assert 3.0 - 0.5 <= slow_at - drip.started[0] < 3.0 + 2.5  # the server saw it late
    assert query(home, "SELECT status, attempts FROM deliveries WHERE channel = 'slow'"
                 ) == [("pending", 1)]
    # The retry waits for its backoff on the clock: not before, and then at once.
    retry_at = query(home, "SELECT next_attempt_at FROM deliveries WHERE channel = 'slow'"
                     )[0][0]
    assert retry_at - slow_at == pytest.approx(BACKOFF)
    assert len(drip.started) == 1
    desk.move_to(retry_at)
    wait_for(lambda: len(drip.started) >= 2, 15, "the retry of the slow endpoint")


def test_a_hanging_alert_command_is_killed_with_its_tree_at_the_deadline(
        home: Path, pipelines: Path, hooks: Hooks, tmp_path: Path, desks: list[Desk]) -> None:
    pid_file = tmp_path / "grandchild.pid"
    page_both(home, pipelines, hooks, f"""
[channels.slow]
type = "command"
command = "sleep 300 & echo $! > {pid_file}; wait"
timeout = "1s"
""", desks)
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 15,
             "the command to start")
    grandchild = int(pid_file.read_text())
    wait_for(lambda: attempts(home, "slow"), 15, "the command attempt to end")
    at, ok, detail = attempts(home, "slow")[0]
    assert not ok and detail == "no complete answer within 1s from command"
    assert attempts(home, "fast")[0][0] < at
    wait_for(lambda: not alive(grandchild), 5, "the command's background child to die")


def test_alert_ids_that_name_no_alert_are_one_line(home: Path, pipelines: Path) -> None:
    write(pipelines, "a.yaml", "dag_id: a\ntasks:\n  t: {command: 'true'}\n")
    assert flowtui("run", "a", home=home, pipelines=pipelines).returncode == 0  # a database
    for action in ("ack", "resolve"):
        for alert_id in ("99999999999999999999999", str(2**63), "0", "-1"):
            result = flowtui("alerts", action, alert_id, home=home)
            assert result.returncode == 2, (action, alert_id, result.stderr)
            assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
            assert f"no alert {alert_id};" in result.stderr
        result = flowtui("alerts", action, "abc", home=home)
        assert result.returncode == 2 and result.stderr.count("\n") == 1
        assert "invalid int value: 'abc'" in result.stderr


def test_an_sla_no_clock_can_show_is_reported_not_a_traceback(home: Path,
                                                             pipelines: Path) -> None:
    dag = write(pipelines, "a.yaml", """
        dag_id: report
        sla: {within: 1h}
        tasks:
          t: {command: 'true'}
    """)
    write(pipelines, "b.yaml", """
        dag_id: daily
        sla: {within: 2h}
        tasks:
          t: {command: 'true'}
    """)
    for dag_id in ("report", "daily"):
        assert flowtui("run", dag_id, home=home, pipelines=pipelines).returncode == 0
    dag.write_text(dag.read_text().replace("within: 1h", "within: 1e20"))
    # Whether the loader rejects the value or sla.py refuses the deadline, the SLA is reported
    # as not checked in one line, and the other DAG's SLA is still shown.
    text = flowtui("sla", home=home, pipelines=pipelines)
    assert text.returncode == 0 and "Traceback" not in text.stderr, text.stderr
    skipped = [line for line in text.stdout.splitlines() if "not checked" in line]
    assert len(skipped) == 1 and "a.yaml" in skipped[0], text.stdout
    assert "met       daily" in text.stdout
    as_json = flowtui("sla", "--json", home=home, pipelines=pipelines)
    assert as_json.returncode == 0 and "Traceback" not in as_json.stderr
    assert [s["dag_id"] for s in json.loads(as_json.stdout)] == ["daily"]
    assert "not checked" in as_json.stderr


def test_sla_statuses_never_crash_on_the_dag_spec_they_are_given(home: Path,
                                                                pipelines: Path) -> None:
    from flowtui.runner.config import load_config
    from flowtui.runner.loader import load_folder
    from flowtui.runner.sla import active_statuses
    from flowtui.store import Store

    write(pipelines, "a.yaml", "dag_id: report\nsla: {within: 1h}\ntasks:\n"
                               "  t: {command: 'true'}\n")
    assert flowtui("run", "report", home=home, pipelines=pipelines).returncode == 0
    dags = load_folder(pipelines).dags
    store = Store.open(load_config(home, pipelines).db_path)
    try:
        for sla in ({"within": 1e20}, {"within": 1e308}):
            dags["report"].sla = sla  # values a loader might let through, or a Python DAG
            problems: list[str] = []
            assert active_statuses(store, dags, time.time(), problems=problems) == []
            assert len(problems) == 1 and "its SLA is not checked" in problems[0]
    finally:
        store.close()


def test_a_delivery_left_for_a_channel_no_longer_configured_is_failed_with_why(
        home: Path, pipelines: Path, runners: list) -> None:
    """flowtui.toml lost its channels while a page was still pending: the next runner (with no
    channel at all, so no sender of its own otherwise) closes the page as failed and says why,
    instead of leaving it pending for ever."""
    import sqlite3

    from daemon_support import start
    from flowtui.store import Store

    write(pipelines, "a.yaml", "dag_id: a\ntasks:\n  t: {command: 'true'}\n")
    Store.open(home / "flowtui.db").close()  # a home with its schema
    now = time.time()
    with sqlite3.connect(home / "flowtui.db") as conn:
        conn.execute("INSERT INTO alerts (kind, dag_id, run_id, task_id, state, severity, level, "
                     "summary, created_at, updated_at) VALUES ('task_failed', 'a', 'r1', 't', "
                     "'open', 'error', 1, 'exited 1', ?, ?)", (now, now))
        conn.execute("INSERT INTO deliveries (alert_id, channel, action, status, attempts, "
                     "next_attempt_at, created_at, updated_at) VALUES (1, 'gone', 'trigger', "
                     "'pending', 0, ?, ?, ?)", (now, now, now))
    start(runners, home, pipelines)
    status = wait_for(lambda: query(home, "SELECT status, last_status FROM deliveries WHERE "
                                          "status != 'pending'"), 15, "the delivery closed")
    assert status == [("failed", "channel 'gone' is not configured")]


def test_a_runner_with_no_channel_runs_no_sender(home: Path, pipelines: Path, hooks) -> None:
    """With nothing to deliver ever (no channel configured, nothing pending) the runner starts
    no sender thread, no HTTP client, no event loop; with a channel it does."""
    import signal

    from flowtui.runner.config import load_config
    from flowtui.runner.daemon import Daemon
    from flowtui.runner.notify import Sender

    write(pipelines, "a.yaml", "dag_id: a\ntasks:\n  t: {command: 'true'}\n")
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)
    try:
        for toml, senders in (("", 0), (f'[channels.hook]\ntype = "webhook"\n'
                                         f'url = "{hooks.url}/x"\n', 1)):
            (home / "flowtui.toml").write_text(toml)
            daemon = Daemon(load_config(home, pipelines))
            try:
                daemon.start()
                daemon.run_until_idle()
                alive_senders = [t for t in threading.enumerate() if isinstance(t, Sender)]
                assert len(alive_senders) == senders, (toml, alive_senders)
            finally:
                daemon.close()
            wait_for(lambda: not [t for t in threading.enumerate() if isinstance(t, Sender)], 5,
                     "the sender to stop")
    finally:
        signal.signal(signal.SIGUSR1, previous)
