"""The runner daemon as a real process: crash safety, zombies, hung tasks, operator actions."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from conftest import flowtui, write
from daemon_support import alive, runs, start, tasks, tries, trigger, wait_for


def test_kill9_of_the_daemon_loses_nothing(home: Path, pipelines: Path, runners: list) -> None:
    lines = ["dag_id: twenty", "tasks:"]
    for chain in range(4):
        for step in range(5):
            deps = f", deps: [c{chain}s{step - 1}]" if step else ""
            lines.append(f"  c{chain}s{step}: {{command: 'sleep 0.7', retries: 2, "
                         f"retry_delay: 0{deps}}}")
    write(pipelines, "twenty.yaml", "\n".join(lines) + "\n")
    first = start(runners, home, pipelines)
    trigger(home, pipelines, "twenty")
    wait_for(lambda: sum(t["state"] == "success" for t in tasks(home, "twenty").values()) >= 4
             and any(t["state"] == "running" for t in tasks(home, "twenty").values()),
             what="some tasks done and some running")
    first.kill9()
    running = [t for t in tasks(home, "twenty").values() if t["state"] == "running"]
    assert running
    # Let the orphaned tasks finish while no runner lives.
    wait_for(lambda: not any(alive(t["pid"]) for t in running if t["pid"]), 10,
             "orphaned tasks to end")
    restarted_at = time.time()
    start(runners, home, pipelines)
    wait_for(lambda: runs(home, "twenty") and runs(home, "twenty")[0]["state"] == "success", 30,
             "the run to succeed after the restart")
    final = tasks(home, "twenty")
    assert len(final) == 20
    assert all(t["state"] == "success" and t["try_number"] == 1 for t in final.values())
    for t in running:
        recorded = final[t["task_id"]]
        assert recorded["exit_code"] == 0
        ended = time.mktime(time.strptime(recorded["end_date"][:19], "%Y-%m-%dT%H:%M:%S")) \
            - time.timezone
        assert ended <= restarted_at + 1  # its real end, not the time of adoption


def test_exit_status_of_a_task_that_ends_while_no_runner_lives(home: Path, pipelines: Path,
                                                              runners: list) -> None:
    write(pipelines, "orphan.yaml", """
        dag_id: orphan
        tasks:
          fails_alone: {command: 'sleep 1; exit 3', retries: 0}
    """)
    first = start(runners, home, pipelines)
    trigger(home, pipelines, "orphan")
    pid = wait_for(lambda: tasks(home, "orphan").get("fails_alone", {}).get("pid"), what="pid")
    first.kill9()
    wait_for(lambda: not alive(pid), 10, "the task to end")
    start(runners, home, pipelines)
    wait_for(lambda: runs(home, "orphan")[0]["state"] == "failed", 20, "the run to fail")
    t = tasks(home, "orphan")["fails_alone"]
    assert t["exit_code"] == 3 and t["reason"] == "exited 3" and t["try_number"] == 1


def test_zombie_when_the_task_died_with_the_runner(home: Path, pipelines: Path,
                                                   runners: list) -> None:
    write(pipelines, "z.yaml", """
        dag_id: z
        tasks:
          t: {command: '[ "$FLOWTUI_TRY_NUMBER" -ge 2 ] || sleep 30', retries: 1, retry_delay: 0}
    """)
    first = start(runners, home, pipelines)
    trigger(home, pipelines, "z")
    pid = wait_for(lambda: tasks(home, "z").get("t", {}).get("pid"), what="pid")
    first.kill9()
    os.killpg(pid, signal.SIGKILL)  # the whole task tree dies too: no exit status anywhere
    wait_for(lambda: not alive(pid), 10, "the task to die")
    start(runners, home, pipelines)
    wait_for(lambda: runs(home, "z")[0]["state"] == "success", 20, "the retry to succeed")
    attempts = tries(home, "z", "t")
    assert [a[0] for a in attempts] == [1, 2]
    assert attempts[0][1] == "failed" and attempts[0][3].startswith("zombie")


def test_kill9_of_a_task_fails_it_and_retries(home: Path, pipelines: Path, runners: list) -> None:
    write(pipelines, "k.yaml", """
        dag_id: k
        tasks:
          t: {command: '[ "$FLOWTUI_TRY_NUMBER" -ge 2 ] || sleep 30', retries: 1, retry_delay: 0}
    """)
    start(runners, home, pipelines)
    trigger(home, pipelines, "k")
    pid = wait_for(lambda: tasks(home, "k").get("t", {}).get("pid"), what="pid")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: runs(home, "k")[0]["state"] == "success", 20, "the retry to succeed")
    attempts = tries(home, "k", "t")
    assert attempts[0][1] == "failed" and attempts[0][2] == -9
    assert attempts[0][3] == "killed by signal SIGKILL"
    assert attempts[1][1] == "success"


def test_a_stopped_task_is_killed_as_hung(home: Path, pipelines: Path, runners: list) -> None:
    write(pipelines, "h.yaml", """
        dag_id: h
        tasks:
          t: {command: 'echo started; sleep 30', heartbeat_timeout: 2s, kill_grace: 1s}
    """)
    start(runners, home, pipelines)
    trigger(home, pipelines, "h")
    pid = wait_for(lambda: tasks(home, "h").get("t", {}).get("pid"), what="pid")
    time.sleep(0.3)  # let it print, so the stop comes after its last output
    os.kill(pid, signal.SIGSTOP)
    stopped_at = time.time()
    wait_for(lambda: tasks(home, "h")["t"]["state"] == "failed", 10, "the hung task to fail")
    attempt = tries(home, "h", "t")[0]
    assert attempt[3].startswith("hung")
    assert attempt[5] - stopped_at < 3.0
    assert not alive(pid)


def test_catchup_creates_each_missed_interval_once(home: Path, pipelines: Path,
                                                   runners: list) -> None:
    start_date = time.strftime("%Y-%m-%dT%H:00:00", time.gmtime(time.time() - 5 * 3600))
    write(pipelines, "c.yaml", f"""
        dag_id: catch
        schedule: "0 * * * *"
        start_date: "{start_date}+00:00"
        catchup: true
        max_active_runs: 5
        tasks:
          t: {{command: "true"}}
    """)
    write(pipelines, "latest.yaml", f"""
        dag_id: latest_only
        schedule: "0 * * * *"
        start_date: "{start_date}+00:00"
        catchup: false
        tasks:
          t: {{command: "true"}}
    """)
    first = start(runners, home, pipelines)
    wait_for(lambda: len(runs(home, "catch")) == 5 and
             all(r["state"] == "success" for r in runs(home, "catch")), 20, "5 catch-up runs")
    first.kill9()
    start(runners, home, pipelines)
    time.sleep(1.0)  # a restarted runner must not create them again
    made = runs(home, "catch")
    assert len(made) == 5 and len({r["run_id"] for r in made}) == 5
    starts = sorted(r["data_interval_start"] for r in made)
    assert [r["data_interval_end"] for r in sorted(made, key=lambda r: r["data_interval_start"])][:-1] \
        == starts[1:]
    assert len(runs(home, "latest_only")) == 1


def test_operator_actions_while_the_daemon_runs(home: Path, pipelines: Path, tmp_path: Path,
                                                runners: list) -> None:
    flag = tmp_path / "flag"
    write(pipelines, "ops.yaml", f"""
        dag_id: ops
        tasks:
          flaky: {{command: '[ -e {flag} ]', retries: 0}}
          after: {{command: "true", deps: [flaky]}}
          waits: {{command: 'exit 1', retries: 1, retry_delay: 1h}}
          long: {{command: 'sleep 30', retries: 0}}
          long2: {{command: 'sleep 30', retries: 0}}
          after_long2: {{command: "true", deps: [long2]}}
    """)
    start(runners, home, pipelines)
    trigger(home, pipelines, "ops")
    wait_for(lambda: tasks(home, "ops").get("flaky", {}).get("state") == "failed"
             and tasks(home, "ops")["waits"]["state"] == "up_for_retry"
             and tasks(home, "ops")["long"]["state"] == "running"
             and tasks(home, "ops")["long2"]["state"] == "running", what="the setup")
    # clear: the failed task and its downstream run again, with full retries.
    flag.write_text("ok")
    result = flowtui("clear", "ops", "latest", "flaky", "--downstream", "--yes", home=home,
                     pipelines=pipelines)
    assert result.returncode == 0, result.stderr
    assert "applied by runner" in result.stdout
    wait_for(lambda: tasks(home, "ops")["after"]["state"] == "success", what="clear to re-run")
    assert tasks(home, "ops")["flaky"]["try_number"] == 2
    # retry: starts at once instead of in an hour.
    asked = time.time()
    assert flowtui("retry", "ops", "latest", "waits", home=home, pipelines=pipelines).returncode == 0
    wait_for(lambda: len(tries(home, "ops", "waits")) == 2, 5, "the retry")
    assert tries(home, "ops", "waits")[1][4] - asked < 1.0
    # kill: the tree ends and the task fails (no retries left).
    long_pid = tasks(home, "ops")["long"]["pid"]
    assert flowtui("kill", "ops", "latest", "long", home=home, pipelines=pipelines).returncode == 0
    wait_for(lambda: tasks(home, "ops")["long"]["state"] == "failed", 15, "kill")
    assert tasks(home, "ops")["long"]["reason"].startswith("killed by")
    wait_for(lambda: not alive(long_pid), 5, "the killed process to end")
    # mark: a running task marked success is stopped and its downstream runs.
    result = flowtui("mark", "ops", "latest", "long2", "--state", "success", home=home,
                     pipelines=pipelines)
    assert result.returncode == 0, result.stderr
    wait_for(lambda: tasks(home, "ops")["after_long2"]["state"] == "success", 15, "mark")
    assert tasks(home, "ops")["long2"]["state"] == "success"
    audit = __import__("sqlite3").connect(home / "flowtui.db").execute(
        "SELECT action, user, task_id FROM audit_log ORDER BY id").fetchall()
    assert [a[0] for a in audit] == ["trigger", "clear", "retry", "kill", "mark"]
    assert audit[1][2] == "flaky,after" and all(a[1] for a in audit)


def test_second_daemon_refused(home: Path, pipelines: Path, runners: list) -> None:
    write(pipelines, "a.yaml", "dag_id: a\ntasks:\n  t: {command: 'true'}\n")
    start(runners, home, pipelines)
    second = flowtui("runner", home=home, pipelines=pipelines, timeout=20)
    assert second.returncode == 2
    assert second.stderr.count("\n") == 1 and "already alive" in second.stderr


def test_bad_input_to_the_runner_commands(home: Path, pipelines: Path) -> None:
    write(pipelines, "bad.yaml", "dag_id: bad\nschedule: '61 * * * *'\ntasks:\n  t: {command: 'true'}\n")
    write(pipelines, "ok.yaml", "dag_id: ok\ntasks:\n  t: {command: 'true'}\n")
    for args in (["trigger", "bad"], ["trigger", "nope"], ["clear", "ok", "nope", "--yes"],
                 ["retry", "ok", "latest", "t"], ["dags", "pause", "nope"]):
        result = flowtui(*args, home=home, pipelines=pipelines)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, args
    assert "cron" in flowtui("trigger", "bad", home=home, pipelines=pipelines).stderr
    db = home / "flowtui.db"
    db.unlink(missing_ok=True)
    db.write_bytes(b"not a database, just bytes" * 100)
    before = db.read_bytes()
    result = flowtui("runner", home=home, pipelines=pipelines)
    assert result.returncode == 2 and "not a flowtui SQLite database" in result.stderr
    assert db.read_bytes() == before
