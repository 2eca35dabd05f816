"""The runner daemon as a real process: pipeline files changing under it, max_active_runs,
pause and unpause, catch-up previews, run conf, and the circuit breaker."""
from __future__ import annotations

import itertools
import json
import sqlite3
import time
from pathlib import Path

from conftest import flowtui, write
from daemon_support import runs, start, tasks, trigger, wait_for


def run_state(home: Path, dag_id: str, run_id: str) -> str | None:
    return {r["run_id"]: r["state"] for r in runs(home, dag_id)}.get(run_id)


def logs(home: Path, dag_id: str, run_id: str, task_id: str) -> str:
    result = flowtui("logs", dag_id, run_id, task_id, home=home)
    assert result.returncode == 0, result.stderr
    return result.stdout


def query(home: Path, sql: str, *params: object) -> list[tuple]:
    conn = sqlite3.connect(home / "flowtui.db", timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def run_spans(home: Path, dag_id: str) -> list[tuple[float, float]]:
    return sorted(query(home, "SELECT start_date, end_date FROM dag_runs WHERE dag_id = ?",
                        dag_id))


def never_overlap(spans: list[tuple[float, float]]) -> bool:
    return all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


def settled(home: Path, pipelines: Path) -> None:
    """Wait until the daemon has handled everything asked of it so far: a run of a control
    DAG triggered now succeeds only after the daemon woke and worked through its requests."""
    run_id = trigger(home, pipelines, "control")
    wait_for(lambda: run_state(home, "control", run_id) == "success", 15, "the control run")


CONTROL = "dag_id: control\ntasks:\n  t: {command: 'true'}\n"


# -- pipeline files changing while the daemon lives -------------------------------------------
def test_an_edited_pipeline_is_picked_up_without_a_restart(home: Path, pipelines: Path,
                                                           runners: list) -> None:
    path = write(pipelines, "e.yaml", """
        dag_id: e
        tasks:
          say: {command: "echo version one"}
    """)
    start(runners, home, pipelines)
    first = trigger(home, pipelines, "e")
    wait_for(lambda: run_state(home, "e", first) == "success", what="the first run")
    assert logs(home, "e", first, "say") == "version one\n"
    # The command changes and a task is added; a trigger right after the edit runs the file as
    # it is now (the trigger itself loaded and validated it, and recorded its tasks).
    path.write_text(path.read_text().replace("echo version one", "echo the second version")
                    + '  added: {command: "echo added", deps: [say]}\n')
    second = trigger(home, pipelines, "e")
    wait_for(lambda: run_state(home, "e", second) in ("success", "failed"), 15,
             "the run after the edit")
    assert logs(home, "e", second, "say") == "the second version\n"
    assert {t: v["state"] for t, v in tasks(home, "e", second).items()} == {
        "say": "success", "added": "success"}
    assert run_state(home, "e", second) == "success"


def test_a_new_pipeline_file_can_be_triggered(home: Path, pipelines: Path,
                                              runners: list) -> None:
    write(pipelines, "a.yaml", "dag_id: a\ntasks:\n  t: {command: 'true'}\n")
    runner = start(runners, home, pipelines)
    write(pipelines, "sub/b.yaml", """
        dag_id: b
        tasks:
          hello: {command: "echo hello from b"}
          after: {command: "echo after", deps: [hello]}
    """)
    run_id = trigger(home, pipelines, "b")
    wait_for(lambda: run_state(home, "b", run_id) == "success", 10, "the new DAG's run")
    assert logs(home, "b", run_id, "hello") == "hello from b\n"
    assert {t["task_id"]: t["state"] for t in tasks(home, "b", run_id).values()} == {
        "hello": "success", "after": "success"}
    assert runner.proc.poll() is None


def test_an_invalid_file_keeps_its_last_good_dag_runnable(home: Path, pipelines: Path,
                                                          tmp_path: Path, runners: list) -> None:
    gate = tmp_path / "gate"
    path = write(pipelines, "g.yaml", f"""
        dag_id: g
        max_active_runs: 1
        tasks:
          t: {{command: 'while [ ! -e {gate} ]; do sleep 0.05; done; echo last good'}}
    """)
    write(pipelines, "control.yaml", CONTROL)
    start(runners, home, pipelines)
    first = trigger(home, pipelines, "g")
    second = trigger(home, pipelines, "g")
    wait_for(lambda: run_state(home, "g", first) == "running", what="the first run to start")
    assert run_state(home, "g", second) == "queued"
    # The file breaks while a run of it is running and another is queued.
    path.write_text("dag_id: g\ntasks:\n  t: {command: 'echo broken', deps: [nope]}\n")
    wait_for(lambda: query(home, "SELECT message FROM import_errors WHERE fileloc = ?",
                           str(path)), 15, "the daemon to record the import error")
    message = query(home, "SELECT message FROM import_errors WHERE fileloc = ?", str(path))[0][0]
    assert "nope" in message
    gate.write_text("")
    wait_for(lambda: run_state(home, "g", first) == "success", 15, "the first run")
    wait_for(lambda: run_state(home, "g", second) == "success", 15,
             "the queued run to start from the last good definition")
    assert logs(home, "g", second, "t") == "last good\n"
    # The error is shown, with its file, and the check fails.
    check = flowtui("dags", "check", home=home, pipelines=pipelines)
    assert check.returncode == 1
    assert "g.yaml" in check.stdout and "nope" in check.stdout
    checked = json.loads(flowtui("dags", "check", "--json", home=home, pipelines=pipelines).stdout)
    assert [e["file"] for e in checked["errors"]] == [str(path)]
    # A new trigger still runs the last good DAG, also two in the same second (.2).
    third = flowtui("trigger", "g", home=home, pipelines=pipelines)
    run_id = third.stdout.strip()
    same_second = run_id.split("__")[1].rsplit("+", 1)[0]  # without its zone and any .N
    fourth = flowtui("trigger", "g", "--date", same_second, home=home, pipelines=pipelines)
    assert third.returncode == 0 and fourth.returncode == 0, third.stderr + fourth.stderr
    other = fourth.stdout.strip()
    assert other.startswith(run_id.split(".")[0]) and other != run_id
    for run in (run_id, other):
        wait_for(lambda: run_state(home, "g", run) == "success", 15, "runs triggered while broken")
        assert logs(home, "g", run, "t") == "last good\n"


# -- how many runs at once ---------------------------------------------------------------------
def test_max_active_runs_1_runs_triggered_runs_one_at_a_time(home: Path, pipelines: Path,
                                                             runners: list) -> None:
    write(pipelines, "m.yaml", """
        dag_id: m
        max_active_runs: 1
        tasks:
          a: {command: "sleep 0.3"}
          b: {command: "sleep 0.1", deps: [a]}
    """)
    start(runners, home, pipelines)
    made = [trigger(home, pipelines, "m") for _ in range(3)]
    assert len(set(made)) == 3
    wait_for(lambda: len(runs(home, "m")) == 3 and
             all(r["state"] == "success" for r in runs(home, "m")), 20, "three runs to succeed")
    spans = run_spans(home, "m")
    assert len(spans) == 3 and never_overlap(spans), spans
    # Tasks too: no task of a later run started before the earlier run ended.
    ends = {row[0]: row[1] for row in query(
        home, "SELECT run_id, end_date FROM dag_runs WHERE dag_id = 'm'")}
    starts = {row[0]: row[1] for row in query(
        home, "SELECT r.run_id, min(t.start_date) FROM tries t JOIN dag_runs r ON r.id = t.run_pk "
              "WHERE r.dag_id = 'm' GROUP BY r.run_id")}
    order = sorted(starts, key=starts.get)
    for earlier, later in itertools.pairwise(order):
        assert starts[later] >= ends[earlier]
    assert order == sorted(made, key=lambda r: query(
        home, "SELECT id FROM dag_runs WHERE dag_id = 'm' AND run_id = ?", r)[0][0])


def test_pause_holds_queued_runs_and_unpause_starts_them(home: Path, pipelines: Path,
                                                         runners: list) -> None:
    write(pipelines, "p.yaml", """
        dag_id: p
        tasks:
          t: {command: "sleep 0.1"}
    """)
    write(pipelines, "control.yaml", CONTROL)
    start(runners, home, pipelines)
    paused = flowtui("dags", "pause", "p", home=home, pipelines=pipelines)
    assert paused.returncode == 0, paused.stderr
    held = [trigger(home, pipelines, "p") for _ in range(2)]
    settled(home, pipelines)
    assert [run_state(home, "p", r) for r in held] == ["queued", "queued"]
    assert not query(home, "SELECT 1 FROM tries t JOIN dag_runs r ON r.id = t.run_pk "
                           "WHERE r.dag_id = 'p'")
    listed = json.loads(flowtui("dags", "list", "--json", home=home, pipelines=pipelines).stdout)
    assert {d["dag_id"]: d["paused"] for d in listed["dags"]}["p"] is True
    reason_while_paused = tasks(home, "p", held[0])["t"]["reason"]
    unpaused = flowtui("dags", "unpause", "p", home=home, pipelines=pipelines)
    assert unpaused.returncode == 0, unpaused.stderr
    wait_for(lambda: [run_state(home, "p", r) for r in held] == ["success", "success"], 15,
             "the held runs to run after unpause")
    assert never_overlap(run_spans(home, "p"))  # still one at a time (max_active_runs 1)
    audit = [a[0] for a in query(home, "SELECT action FROM audit_log WHERE dag_id = 'p' "
                                       "ORDER BY id")]
    assert audit == ["pause", "trigger", "trigger", "unpause"]
    # While held, its tasks said why they were not running (SPEC section 3: "DAG paused").
    assert "paused" in reason_while_paused.lower(), reason_while_paused


def _state_snapshot(home: Path) -> dict[str, list[tuple]]:
    return {
        "runs": query(home, "SELECT dag_id, run_id, state FROM dag_runs ORDER BY id"),
        "tis": query(home, "SELECT run_pk, task_id, state FROM task_instances ORDER BY run_pk"),
        "paused": query(home, "SELECT dag_id, paused, paused_reason FROM dags ORDER BY dag_id"),
        "audit": query(home, "SELECT id, action FROM audit_log ORDER BY id"),
        "requests": query(home, "SELECT id FROM requests ORDER BY id"),
        "events": query(home, "SELECT id FROM events ORDER BY id"),
    }


def test_unpause_dry_run_lists_the_catch_up_runs_and_changes_nothing(
        home: Path, pipelines: Path, runners: list) -> None:
    hour = int(time.time()) // 3600 * 3600
    start_date = time.strftime("%Y-%m-%dT%H:00:00", time.gmtime(hour - 5 * 3600))
    write(pipelines, "cu.yaml", f"""
        dag_id: cu
        schedule: "0 * * * *"
        start_date: "{start_date}+00:00"
        catchup: true
        paused: true
        max_active_runs: 8
        tasks:
          t: {{command: "true"}}
    """)
    write(pipelines, "control.yaml", CONTROL)
    start(runners, home, pipelines)
    settled(home, pipelines)
    assert runs(home, "cu") == []  # paused when first seen: nothing scheduled
    before = _state_snapshot(home)
    expected = (int(time.time()) - (hour - 5 * 3600)) // 3600
    preview = flowtui("dags", "unpause", "cu", "--dry-run", home=home, pipelines=pipelines)
    assert preview.returncode == 0, preview.stderr
    lines = preview.stdout.splitlines()
    assert f"would create {expected} run(s)" in lines[0], preview.stdout
    listed = [l for l in lines[1:] if l.strip().startswith("scheduled")]
    assert len(listed) == expected
    settled(home, pipelines)  # the daemon woke (for the control run) and still made nothing
    after = _state_snapshot(home)
    assert after["runs"][:len(before["runs"])] == before["runs"]
    assert [r for r in after["runs"] if r[0] == "cu"] == []
    assert after["paused"] == before["paused"]
    assert after["requests"] == before["requests"]
    assert [a[1] for a in after["audit"][len(before["audit"]):]] == ["trigger"]  # the control
    # Unpausing for real creates exactly the runs the preview listed.
    assert flowtui("dags", "unpause", "cu", home=home, pipelines=pipelines).returncode == 0
    wait_for(lambda: len(runs(home, "cu")) == expected and
             all(r["state"] == "success" for r in runs(home, "cu")), 20, "the catch-up runs")
    made = sorted(runs(home, "cu"), key=lambda r: r["data_interval_start"])
    assert all(r["run_type"] == "scheduled" for r in made)
    assert len({r["run_id"] for r in made}) == expected


def test_trigger_conf_reaches_the_task_as_params(home: Path, pipelines: Path,
                                                 runners: list) -> None:
    write(pipelines, "c.yaml", """
        dag_id: c
        params: {x: default, other: kept}
        tasks:
          show: {command: "echo x={{ params.x }} other={{ params.other }}"}
    """)
    start(runners, home, pipelines)
    run_id = trigger(home, pipelines, "c", "--conf", '{"x": "y"}')
    wait_for(lambda: run_state(home, "c", run_id) == "success", what="the run with conf")
    assert logs(home, "c", run_id, "show") == "x=y other=kept\n"
    # Conf values are data, never shell syntax.
    hostile = trigger(home, pipelines, "c", "--conf", '{"x": "$(echo pwned); echo z"}')
    wait_for(lambda: run_state(home, "c", hostile) == "success", what="the hostile run")
    assert logs(home, "c", hostile, "show") == "x=$(echo pwned); echo z other=kept\n"


def test_circuit_breaker_pauses_after_consecutive_failed_runs(home: Path, pipelines: Path,
                                                              runners: list) -> None:
    write(pipelines, "cb.yaml", """
        dag_id: cb
        circuit_breaker: {consecutive_failures: 2}
        tasks:
          t: {command: "exit 1", retries: 0}
    """)
    write(pipelines, "control.yaml", CONTROL)
    start(runners, home, pipelines)
    made = [trigger(home, pipelines, "cb") for _ in range(3)]

    def paused() -> dict | None:
        result = flowtui("dags", "list", "--json", home=home, pipelines=pipelines)
        entry = {d["dag_id"]: d for d in json.loads(result.stdout)["dags"]}["cb"]
        return entry if entry["paused"] else None

    entry = wait_for(paused, 20, "the circuit breaker to pause the DAG")
    assert "circuit breaker" in (entry["paused_reason"] or "")
    assert [run_state(home, "cb", r) for r in made[:2]] == ["failed", "failed"]
    settled(home, pipelines)
    assert run_state(home, "cb", made[2]) == "queued", (
        "the third run started: the breaker did not open after 2 failed runs in a row")
    assert paused() is not None
