"""Sensors and windows, executed for real: sensor processes poking files, commands, an HTTP
server and the store, with pools shared between sensors and ordinary tasks."""
from __future__ import annotations

import datetime as dt
import http.server
import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import flowtui, write
from flowtui.runner.runs import parse_date
from helpers import log_text, run_dag, tries

DAY = "2026-01-05"


def _later(delay: float, action) -> threading.Thread:
    def work() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


# -- the four kinds --------------------------------------------------------------------------
def test_file_sensor_waits_for_a_file_named_by_the_logical_date(home: Path, pipelines: Path,
                                                                tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    write(pipelines, "f.yaml", f"""
        dag_id: f
        tasks:
          wait:
            sensor: {{file: "{landing}/{{{{ ds }}}}/_SUCCES*"}}
            poke_interval: 0.1s
            timeout: 20s
          load: {{command: "echo loaded", deps: [wait]}}
    """)
    target = landing / DAY / "_SUCCESS"

    def land() -> None:  # once the sensor has poked at least once and found nothing
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(
                "poke 1: not met" in p.read_text() for p in home.glob("logs/f/*/wait/1.log")):
            time.sleep(0.02)
        time.sleep(0.5)
        target.parent.mkdir(parents=True)
        target.write_text("")

    # A file for another date must not satisfy it.
    (landing / "2026-01-04").mkdir(parents=True)
    (landing / "2026-01-04" / "_SUCCESS").write_text("")
    started = time.time()
    thread = _later(0, land)
    store, run, tis = run_dag(home, pipelines, "f", logical_date=parse_date(DAY, "UTC"))
    thread.join()
    assert run.state == "success"
    assert tis["wait"].state == "success" and tis["load"].state == "success"
    assert tis["wait"].end_date - started >= 0.5
    assert tis["load"].start_date >= tis["wait"].end_date
    log = log_text(store, run, "wait")
    assert "poke 1: not met (0 match(es)" in log and f"/{DAY}/_SUCCES*" in log
    pokes = len(re.findall(r"^\d\d:\d\d:\d\d poke \d+: ", log, re.MULTILINE))
    assert pokes >= 2 and f"poke {pokes}: met (1 match(es)" in log, log
    assert [t.try_number for t in tries(store, run, "wait")] == [1]


def test_command_sensor_is_met_when_the_command_exits_0(home: Path, pipelines: Path,
                                                        tmp_path: Path) -> None:
    counter = tmp_path / "count"
    write(pipelines, "c.yaml", f"""
        dag_id: c
        params: {{needed: 3}}
        tasks:
          wait:
            sensor:
              command: 'n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 )); echo $n > {counter}; [ $n -ge {{{{ params.needed }}}} ]'
            poke_interval: 0.1s
            timeout: 20s
    """)
    store, run, tis = run_dag(home, pipelines, "c")
    assert run.state == "success" and tis["wait"].state == "success"
    assert counter.read_text().strip() == "3"
    log = log_text(store, run, "wait")
    assert "poke 1: not met (command exited 1)" in log
    assert "poke 2: not met (command exited 1)" in log
    assert "poke 3: met (command exited 0)" in log


@pytest.fixture
def flaky_http() -> Iterator[tuple[str, list[int]]]:
    """A real HTTP server on 127.0.0.1 that answers 503 twice, then 200."""
    answers: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = 503 if len(answers) < 2 else 200
            answers.append(code)
            body = b"ready" if code == 200 else b"not yet"
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/ready", answers
    finally:
        server.shutdown()
        server.server_close()


def test_http_sensor_waits_for_a_2xx(home: Path, pipelines: Path,
                                     flaky_http: tuple[str, list[int]]) -> None:
    url, answers = flaky_http
    write(pipelines, "h.yaml", f"""
        dag_id: h
        tasks:
          wait:
            sensor: {{http: "{url}"}}
            poke_interval: 0.1s
            timeout: 20s
    """)
    store, run, tis = run_dag(home, pipelines, "h")
    assert run.state == "success" and tis["wait"].state == "success"
    assert answers == [503, 503, 200]
    log = log_text(store, run, "wait")
    assert log.count(": 503)") == 2 and log.count(": 200)") == 1
    assert "poke 3: met" in log


def test_task_sensor_waits_for_another_dag_on_the_same_logical_date(home: Path,
                                                                    pipelines: Path) -> None:
    write(pipelines, "up.yaml", """
        dag_id: up
        tasks:
          produce: {command: "echo produced {{ ds }}"}
    """)
    write(pipelines, "down.yaml", """
        dag_id: down
        tasks:
          wait_up:
            sensor: {task: up.produce}
            poke_interval: 0.1s
            timeout: 1s
          use: {command: "echo using {{ ds }}", deps: [wait_up]}
    """)
    result = flowtui("run", "up", "--date", DAY, home=home, pipelines=pipelines)
    assert result.returncode == 0, result.stdout + result.stderr
    met = flowtui("run", "down", "--date", DAY, "--json", home=home, pipelines=pipelines)
    assert met.returncode == 0, met.stdout + met.stderr
    document = json.loads(met.stdout)
    states = {t["task_id"]: t["state"] for t in document["tasks"]}
    assert states == {"wait_up": "success", "use": "success"}
    # Another logical date has no upstream run: the sensor times out and the run fails.
    started = time.monotonic()
    missed = flowtui("run", "down", "--date", "2026-01-06", "--json", home=home,
                     pipelines=pipelines)
    assert missed.returncode == 1, missed.stdout + missed.stderr
    document = json.loads(missed.stdout)
    tasks = {t["task_id"]: t for t in document["tasks"]}
    assert tasks["wait_up"]["state"] == "failed"
    assert "sensor timed out" in tasks["wait_up"]["reason"]
    assert tasks["use"]["state"] == "upstream_failed"
    assert time.monotonic() - started < 10
    log = flowtui("logs", "down", "latest", "wait_up", home=home, pipelines=pipelines).stdout
    assert "up.produce: no run for this logical date" in log


# -- timeout, soft_fail, retries -------------------------------------------------------------
def test_a_timed_out_sensor_fails_and_is_not_retried(home: Path, pipelines: Path) -> None:
    write(pipelines, "t.yaml", """
        dag_id: t
        tasks:
          wait:
            sensor: {command: "false"}
            poke_interval: 0.1s
            timeout: 0.6s
            retries: 2
            retry_delay: 0
          after: {command: "true", deps: [wait]}
    """)
    store, run, tis = run_dag(home, pipelines, "t")
    assert run.state == "failed"
    wait = tis["wait"]
    assert wait.state == "failed" and wait.try_number == 1
    assert wait.reason == "sensor timed out after 0.6s"
    assert wait.exit_code == 124
    attempts = tries(store, run, "wait")
    assert len(attempts) == 1
    assert 0.6 <= attempts[0].end_date - attempts[0].start_date < 3.0
    assert tis["after"].state == "upstream_failed"


def test_soft_fail_makes_a_timed_out_sensor_skipped(home: Path, pipelines: Path) -> None:
    write(pipelines, "s.yaml", """
        dag_id: s
        tasks:
          wait:
            sensor: {command: "false"}
            poke_interval: 0.1s
            timeout: 0.5s
            soft_fail: true
            retries: 2
            retry_delay: 0
          after: {command: "true", deps: [wait]}
          also: {command: "true", deps: [wait], trigger_rule: all_done}
    """)
    store, run, tis = run_dag(home, pipelines, "s")
    assert tis["wait"].state == "skipped"
    assert "soft_fail" in tis["wait"].reason and "timed out" in tis["wait"].reason
    assert len(tries(store, run, "wait")) == 1
    assert tis["after"].state == "skipped"  # all_success with a skipped upstream
    assert tis["also"].state == "success"
    assert run.state == "success"


def test_timeout_counts_from_the_first_poke_across_retries(home: Path, pipelines: Path) -> None:
    """Each try is killed by execution_timeout (a retryable failure); the sensor timeout still
    counts from the very first poke, so the sensor ends long before its retries run out."""
    write(pipelines, "r.yaml", """
        dag_id: r
        tasks:
          wait:
            sensor: {command: "false"}
            poke_interval: 0.1s
            timeout: 2s
            execution_timeout: 0.7s
            kill_grace: 0.5s
            retries: 10
            retry_delay: 0
    """)
    store, run, tis = run_dag(home, pipelines, "r")
    attempts = tries(store, run, "wait")
    wait = tis["wait"]
    assert wait.state == "failed"
    assert wait.reason == "sensor timed out after 2s"
    assert len(attempts) >= 2
    assert all("execution_timeout" in a.reason for a in attempts[:-1])
    assert attempts[-1].reason == "sensor timed out after 2s"
    assert len(attempts) < 11  # not retried to the end: the timeout was not reset
    first_poke = attempts[0].start_date
    assert wait.first_poke_at == pytest.approx(first_poke, abs=0.01)
    # Timed out about 2 s after the first poke, not 2 s after the last try started.
    assert 2.0 <= attempts[-1].end_date - first_poke < 3.0
    assert attempts[-1].end_date - attempts[-1].start_date < 1.0


def test_reschedule_keeps_first_poke_and_times_out_from_it(home: Path, pipelines: Path) -> None:
    write(pipelines, "rs.yaml", """
        dag_id: rs
        tasks:
          wait:
            sensor: {command: "false"}
            mode: reschedule
            poke_interval: 0.2s
            timeout: 3s
            retries: 0
    """)
    # 3 s, not 1: a poke is a process of its own, and on a loaded machine one took 0.4 s, so
    # 1 s held only two of them.
    store, run, tis = run_dag(home, pipelines, "rs")
    attempts = tries(store, run, "wait")
    wait = tis["wait"]
    assert wait.state == "failed" and wait.reason == "sensor timed out after 3s"
    assert len(attempts) >= 3
    assert [a.state for a in attempts[:-1]] == ["rescheduled"] * (len(attempts) - 1)
    assert attempts[-1].state == "failed"
    assert wait.first_poke_at == pytest.approx(attempts[0].start_date, abs=0.01)
    assert 3.0 <= attempts[-1].end_date - attempts[0].start_date < 5.0
    # Between pokes the process is gone: each poke is its own short try.
    for a, b in itertools.pairwise(attempts):
        assert b.start_date - a.end_date >= 0.2 - 0.01


# -- pools: reschedule frees the slot, poke holds it ------------------------------------------
POOL_DAG = """
    dag_id: pooled
    tasks:
      wait:
        sensor: {{command: "test -e {flag}"}}
        mode: {mode}
        poke_interval: {interval}
        timeout: {timeout}
        pool: small
        priority_weight: 10
      work:
        command: "sleep 0.2; touch {flag}"
        pool: small
"""


def test_reschedule_mode_frees_the_pool_slot_between_pokes(home: Path, pipelines: Path,
                                                           tmp_path: Path) -> None:
    (home / "flowtui.toml").write_text("[pools]\nsmall = 1\n")
    flag = tmp_path / "flag"
    write(pipelines, "p.yaml", POOL_DAG.format(flag=flag, mode="reschedule", interval="1s",
                                               timeout="20s"))
    store, run, tis = run_dag(home, pipelines, "pooled")
    assert run.state == "success", {t: (ti.state, ti.reason) for t, ti in tis.items()}
    pokes = tries(store, run, "wait")
    work = tries(store, run, "work")[0]
    assert pokes[0].start_date <= work.start_date  # the sensor (higher priority) poked first
    assert pokes[0].state == "rescheduled"
    # The ordinary task ran inside a gap between two pokes, holding the only slot.
    gaps = [(a.end_date, b.start_date) for a, b in itertools.pairwise(pokes)]
    assert any(end <= work.start_date and work.end_date <= start for end, start in gaps), (
        gaps, work.start_date, work.end_date)
    assert pokes[-1].state == "success" and len(pokes) >= 2
    # Never two holders of the one slot at once.
    spans = sorted([(p.start_date, p.end_date) for p in pokes] + [(work.start_date, work.end_date)])
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


def test_poke_mode_holds_the_pool_slot_while_it_waits(home: Path, pipelines: Path,
                                                      tmp_path: Path) -> None:
    (home / "flowtui.toml").write_text("[pools]\nsmall = 1\n")
    flag = tmp_path / "flag"
    write(pipelines, "p.yaml", POOL_DAG.format(flag=flag, mode="poke", interval="0.1s",
                                               timeout="1s"))
    seen: set[str] = set()
    stop = threading.Event()

    def watch_reasons() -> None:  # what `tasks list` would have said about work meanwhile
        import sqlite3

        while not stop.is_set():
            try:
                conn = sqlite3.connect(f"file:{home / 'flowtui.db'}?mode=ro", uri=True, timeout=5)
                seen.update(r[0] for r in conn.execute(
                    "SELECT reason FROM task_instances WHERE task_id = 'work'") if r[0])
                conn.close()
            except sqlite3.Error:
                pass
            time.sleep(0.02)

    watcher = threading.Thread(target=watch_reasons, daemon=True)
    watcher.start()
    try:
        store, run, tis = run_dag(home, pipelines, "pooled")
    finally:
        stop.set()
        watcher.join()
    sensor = tries(store, run, "wait")
    work = tries(store, run, "work")[0]
    assert len(sensor) == 1
    # The sensor held the slot until it timed out; the work (which would have met it) waited.
    assert tis["wait"].state == "failed" and "timed out" in tis["wait"].reason
    assert work.start_date >= sensor[0].end_date
    assert sensor[0].end_date - sensor[0].start_date >= 1.0
    assert tis["work"].state == "success"
    assert "pool small full (1/1 slots)" in seen, seen


# -- windows ---------------------------------------------------------------------------------
def _engine_turn(home: Path, pipelines: Path, dag_id: str):
    from flowtui.runner.config import load_config
    from flowtui.runner.engine import Engine
    from flowtui.runner.loader import load_folder
    from flowtui.runner.runs import create_manual_run
    from flowtui.store import Store

    result = load_folder(pipelines)
    assert not result.errors, [str(e) for e in result.errors]
    dag = result.dags[dag_id]
    config = load_config(home, pipelines)
    store = Store.open(config.db_path)
    runner_id = store.register_runner("run")
    engine = Engine(store, config, runner_id)
    run = create_manual_run(store, dag, logical_date=None, conf={}, runner_id=runner_id)
    engine.start_run(dag, run)
    engine.turn()  # decides the tasks, then commits
    return store, engine, run


def _closed_window(tz: str) -> tuple[str, str]:
    from zoneinfo import ZoneInfo

    hour = dt.datetime.now(ZoneInfo(tz)).hour
    opens = f"{(hour + 2) % 24:02d}:00"
    return f"{opens}-{(hour + 3) % 24:02d}:00", opens


@pytest.mark.parametrize("tz", ["UTC", "Asia/Kolkata"])
def test_a_closed_window_holds_the_task_and_says_when_it_opens(home: Path, pipelines: Path,
                                                              tz: str) -> None:
    window, opens = _closed_window(tz)
    write(pipelines, "w.yaml", f"""
        dag_id: w
        timezone: {tz}
        tasks:
          nightly: {{command: "echo ran", window: "{window}"}}
          free: {{command: "true"}}
    """)
    store, engine, run = _engine_turn(home, pipelines, "w")
    try:
        tis = {t.task_id: t for t in store.task_instances(run.pk)}
        nightly = tis["nightly"]
        assert nightly.state == "scheduled"
        assert nightly.try_number == 0 and not store.tries(run.pk, "nightly")
        # The window is read in the DAG's timezone, and so is the time it opens at.
        assert nightly.reason == f"outside its window {window} (opens at {opens})"
        assert tis["free"].state in ("running", "success")
    finally:
        engine.close()


def test_an_open_window_lets_the_task_run(home: Path, pipelines: Path) -> None:
    hour = dt.datetime.now(dt.UTC).hour
    window = f"{(hour - 1) % 24:02d}:00-{(hour + 2) % 24:02d}:00"
    write(pipelines, "o.yaml", f"""
        dag_id: o
        tasks:
          daytime: {{command: "echo ran", window: "{window}"}}
    """)
    store, run, tis = run_dag(home, pipelines, "o")
    assert run.state == "success"
    assert tis["daytime"].state == "success"
    assert log_text(store, run, "daytime") == "ran\n"
