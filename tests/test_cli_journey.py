"""The CLI on the on-call journey, through the real ``flowtui`` command: a failed run names its
failed tasks with their error lines and the exact logs command; wrong names get one clear line."""
from __future__ import annotations

import json
import shlex
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import flowtui, write
from test_cli_errors import assert_usage_error
from test_edges_schedule_cli import assert_terminal_safe

REAL_ERROR = "ERROR loader: connection refused by warehouse.internal:5432 (attempt 3/3)"

NOISE = f"""
import sys
for i in range(1000):
    print(f"INFO step {{i}}: copied 1000 rows")
    if i % 100 == 0:
        print("INFO config: on_error=abort")
        print("INFO batch done, errors=0")
print({REAL_ERROR!r})
for i in range(1000):
    print(f"INFO cleanup {{i}}: errors=0")
    if i % 100 == 0:
        print("INFO config: on_error=abort")
sys.exit(3)
"""


@pytest.fixture
def noisy(tmp_path: Path, pipelines: Path) -> Path:
    """extract fails with its real error in the middle of 2,000 lines of noise and decoys;
    load and report never run because of it; side succeeds."""
    script = write(tmp_path, "noise.py", NOISE)
    write(pipelines, "noisy.yaml", f"""
        dag_id: noisy
        tasks:
          extract: {{command: "{sys.executable} {script}"}}
          load: {{command: "echo load", deps: [extract]}}
          report: {{command: "echo report", deps: [load]}}
          side: {{command: "echo side"}}
        """)
    return pipelines


def _summary(stdout: str) -> list[str]:
    """The lines ``flowtui run`` prints after its progress: from the "run ... of" line on."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("run "))
    return lines[start:]


def _run_id(home: Path, dag_id: str) -> str:
    listed = flowtui("runs", "list", dag_id, "--json", home=home)
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)[0]["run_id"]


# -- flowtui run: the failure summary ----------------------------------------------------------
def test_a_failed_run_names_the_task_its_real_error_line_and_the_logs_command(
        home: Path, noisy: Path) -> None:
    proc = flowtui("run", "noisy", home=home, pipelines=noisy)
    assert proc.returncode == 1, proc.stderr
    summary = _summary(proc.stdout)
    run_id = _run_id(home, "noisy")
    # One line: the task, its reason, its real error line (not a decoy).
    assert summary[1] == f"  ✗ extract: exited 3: {REAL_ERROR}", summary
    assert "on_error=abort" not in "\n".join(summary) and "errors=0" not in "\n".join(summary)
    # The exact command, pasteable: no literal TASK.
    command = (f"flowtui --home {shlex.quote(str(home))} --pipelines {shlex.quote(str(noisy))} "
               f"logs noisy {shlex.quote(run_id)} extract")
    assert summary[2] == f"      logs: {command}", summary
    assert not any(line.rstrip().endswith(" TASK") for line in summary)
    # Each task that never ran is named once, under the failed task.
    assert summary[3] == "      ⇡ never ran because of it: load, report", summary
    assert "\n".join(summary).count("report") == 1
    # The command works as printed.
    argv = shlex.split(command)
    shown = subprocess.run([sys.executable, "-P", "-m", "flowtui", *argv[1:]],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert REAL_ERROR in shown.stdout and len(shown.stdout.splitlines()) > 2000


def test_the_logs_command_has_no_home_or_pipelines_flags_when_none_were_given(
        home: Path, noisy: Path) -> None:
    env = {"FLOWTUI_HOME": str(home), "FLOWTUI_PIPELINES": str(noisy)}
    proc = flowtui("run", "noisy", env=env)
    assert proc.returncode == 1, proc.stderr
    run_id = _run_id(home, "noisy")
    assert f"      logs: flowtui logs noisy {shlex.quote(run_id)} extract" in _summary(proc.stdout)


def test_the_error_line_cannot_drive_the_terminal(home: Path, pipelines: Path,
                                                  tmp_path: Path) -> None:
    script = write(tmp_path, "evil.py", r"""
        import sys
        print("ERROR \x1b]0;OWNED\x07 \x1b[2J gone")
        sys.exit(1)
        """)
    write(pipelines, "evil.yaml", f"""
        dag_id: evil
        tasks:
          a: {{command: "{sys.executable} {script}"}}
        """)
    proc = flowtui("run", "evil", home=home, pipelines=pipelines)
    assert proc.returncode == 1, proc.stderr
    assert_terminal_safe(proc)
    assert "  ✗ a: exited 1: ERROR ^[]0;OWNED^G ^[[2J gone" in _summary(proc.stdout)


# -- tasks list: the error excerpt -------------------------------------------------------------
def test_tasks_list_shows_each_failed_tasks_error_line(home: Path, noisy: Path) -> None:
    assert flowtui("run", "noisy", home=home, pipelines=noisy).returncode == 1
    listed = flowtui("tasks", "list", "noisy", "latest", "--json", home=home)
    assert listed.returncode == 0, listed.stderr
    errors = {t["task_id"]: t["error"] for t in json.loads(listed.stdout)}
    assert errors == {"extract": REAL_ERROR, "load": None, "report": None, "side": None}
    text = flowtui("tasks", "list", "noisy", "latest", home=home, env={"COLUMNS": "200"})
    lines = text.stdout.splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("✗ extract"))
    assert lines[row + 1] == f"    {REAL_ERROR}"
    assert sum(REAL_ERROR in line for line in lines) == 1
    # Cut to the terminal's width, with a mark that it was cut.
    narrow = flowtui("tasks", "list", "noisy", "latest", home=home, env={"COLUMNS": "50"})
    lines = narrow.stdout.splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("✗ extract"))
    assert lines[row + 1].startswith("    ERROR loader: conn") and lines[row + 1].endswith("…")
    assert len(lines[row + 1]) < 50


# -- wrong names and homes: one line, exit 2 ---------------------------------------------------
HELLO = "dag_id: hello\ntasks:\n  a: {command: echo hi}\n"


@pytest.mark.parametrize("argv", [
    ["runs", "list"], ["runs", "list", "--json"], ["runs", "list", "hello"],
    ["tasks", "list", "hello", "latest"], ["tasks", "list", "hello", "latest", "--json"],
    ["logs", "hello", "latest", "a"], ["alerts", "list"], ["alerts", "list", "--json"],
    ["alerts", "ack", "1"], ["sla"], ["clear", "hello", "latest", "--yes"],
    ["retry", "hello", "latest", "a"], ["mark", "hello", "latest", "a", "--state", "success"],
    ["kill", "hello", "latest", "a"],
])
def test_a_home_without_a_database_is_one_line(tmp_path: Path, pipelines: Path,
                                                argv: list[str]) -> None:
    write(pipelines, "hello.yaml", HELLO)
    typo = tmp_path / "hoem"
    assert_usage_error(flowtui(*argv, home=typo, pipelines=pipelines),
                       f"no flowtui database in {typo}; run 'flowtui runner' or 'flowtui run' "
                       "there first, or check --home")
    assert not typo.exists()


def test_commands_that_read_only_the_pipelines_need_no_database(tmp_path: Path,
                                                                pipelines: Path) -> None:
    write(pipelines, "hello.yaml", HELLO)
    for argv in (["dags", "list"], ["dags", "check"], ["dags", "show", "hello"]):
        proc = flowtui(*argv, home=tmp_path / "hoem", pipelines=pipelines)
        assert proc.returncode == 0, (argv, proc.stderr)


def test_an_unknown_dag_is_named_with_the_closest_one(home: Path, pipelines: Path) -> None:
    write(pipelines, "hello.yaml", HELLO)
    write(pipelines, "quiet.yaml", "dag_id: quiet\ntasks:\n  a: {command: echo q}\n")
    assert flowtui("run", "hello", home=home, pipelines=pipelines).returncode == 0
    assert flowtui("dags", "pause", "quiet", home=home, pipelines=pipelines).returncode == 0
    for argv in (["runs", "list", "nosuch"], ["tasks", "list", "nosuch", "latest"],
                 ["logs", "nosuch", "latest", "a"]):
        line = assert_usage_error(flowtui(*argv, home=home), "unknown DAG 'nosuch'")
        assert "hello" in line and "quiet" in line
    assert_usage_error(flowtui("runs", "list", "helo", home=home),
                       "unknown DAG 'helo'", "did you mean 'hello'?")
    # A DAG the store knows with no run yet: an empty answer, or "has no runs".
    empty = flowtui("runs", "list", "quiet", "--json", home=home)
    assert empty.returncode == 0 and json.loads(empty.stdout) == []
    assert_usage_error(flowtui("tasks", "list", "quiet", "latest", home=home), "has no runs")


@pytest.mark.parametrize(("argv", "expected"), [
    (["rnu"], "flowtui: error: unknown command 'rnu'; did you mean 'run'?"),
    (["dags", "lsit"], "flowtui: error: unknown command 'dags lsit'; did you mean 'dags list'?"),
    (["runs", "list", "--state", "faild"],
     "flowtui: error: --state: 'faild' is not a choice; did you mean 'failed'?"),
])
def test_a_mistyped_command_gets_did_you_mean(home: Path, argv: list[str], expected: str) -> None:
    line = assert_usage_error(flowtui(*argv, home=home))
    assert line == expected


# -- logs ---------------------------------------------------------------------------------------
def test_logs_of_a_task_that_never_ran_names_the_failed_upstream(home: Path,
                                                                 noisy: Path) -> None:
    assert flowtui("run", "noisy", home=home, pipelines=noisy).returncode == 1
    run_id = _run_id(home, "noisy")
    for task_id in ("load", "report"):  # report waits for load, which waits for extract
        line = assert_usage_error(flowtui("logs", "noisy", "latest", task_id, home=home,
                                          pipelines=noisy))
        assert line == (f"flowtui: error: {task_id} never ran: its upstream extract failed "
                        f"(run flowtui --home {home} --pipelines {noisy} logs noisy "
                        f"{shlex.quote(run_id)} extract)")
    # Without the pipelines at hand, the run's failed task is still named.
    line = assert_usage_error(flowtui("logs", "noisy", "latest", "report", home=home))
    assert "report never ran: its upstream extract failed" in line


def test_logs_follow_says_how_the_try_ended(home: Path, pipelines: Path, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    write(pipelines, "slow.yaml", f"""
        dag_id: slow
        tasks:
          talk:
            command: "echo started; while [ ! -e {gate} ]; do sleep 0.05; done; echo 'ERROR disk full on /data'; echo bye; exit 3"
        """)
    argv = [sys.executable, "-P", "-m", "flowtui", "--home", str(home), "--pipelines",
            str(pipelines)]
    run = subprocess.Popen([*argv, "run", "slow"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    follow = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            listed = flowtui("tasks", "list", "slow", "latest", "--json", home=home)
            if listed.returncode == 0 and json.loads(listed.stdout)[0]["state"] == "running":
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the task never started")
        follow = subprocess.Popen([*argv, "logs", "slow", "latest", "talk", "--follow"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert follow.stdout is not None
        assert follow.stdout.readline() == "started\n"  # following the live try
        gate.write_text("")
        out, err = follow.communicate(timeout=60)
        assert follow.returncode == 0, err
        assert out == "ERROR disk full on /data\nbye\n"  # stdout stays the log
        assert err == "-- try 1 ended: failed, exit 3 (ERROR disk full on /data)\n"
        assert run.wait(timeout=60) == 1
    finally:
        for proc in (run, follow):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


# -- dags ----------------------------------------------------------------------------------------
def test_dags_show_a_schedule_with_no_fire_left(home: Path, pipelines: Path) -> None:
    # Feb 29 after 9998-03-01: 9999 is no leap year, and there is no year 10000.
    write(pipelines, "late.yaml", """
        dag_id: late
        schedule: "0 0 29 2 *"
        start_date: 9998-03-01
        tasks:
          a: {command: echo late}
        """)
    proc = flowtui("dags", "show", "late", home=home, pipelines=pipelines)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "no more fire times" in proc.stdout


def test_dags_list_and_check_show_the_dags_the_runner_set_aside(home: Path,
                                                                pipelines: Path) -> None:
    from flowtui.store import Store
    from flowtui.store.models import ImportError_

    write(pipelines, "hello.yaml", HELLO)
    assert flowtui("run", "hello", home=home, pipelines=pipelines).returncode == 0
    fileloc = json.loads(flowtui("dags", "list", "--json", home=home,
                                 pipelines=pipelines).stdout)["dags"][0]["file"]
    message = ("DAG hello: scheduling failed (ZoneInfoNotFoundError: No/Such_Zone); the runner "
               "set it aside until this file changes")
    store = Store.open(home / "flowtui.db")
    store.set_runner_errors([ImportError_(fileloc, None, message, time.time())])
    store.close()
    listed = flowtui("dags", "list", home=home, pipelines=pipelines)
    assert listed.returncode == 0, listed.stderr
    assert "1 DAG(s) set aside by the runner:" in listed.stdout
    assert f"  {fileloc}: {message}" in listed.stdout
    checked = flowtui("dags", "check", home=home, pipelines=pipelines)
    assert checked.returncode == 1, checked.stdout
    assert f"{fileloc}: {message} (recorded by the runner)" in checked.stdout
    document = json.loads(flowtui("dags", "check", "--json", home=home,
                                  pipelines=pipelines).stdout)
    assert document["errors"] == []
    assert document["runner_errors"] == [{"file": fileloc, "line": None, "message": message}]


# -- state-changing commands and alerts show task text safely ----------------------------------
def test_alert_summaries_and_action_results_cannot_drive_the_terminal(
        home: Path, pipelines: Path) -> None:
    write(pipelines, "hello.yaml", HELLO)
    assert flowtui("run", "hello", home=home, pipelines=pipelines).returncode == 0
    conn = sqlite3.connect(home / "flowtui.db")
    with conn:
        conn.execute("INSERT INTO alerts (kind, dag_id, state, severity, summary, created_at, "
                     "updated_at) VALUES ('task_failed', 'hello', 'open', 'error', ?, ?, ?)",
                     ("a failed: \x1b]0;OWNED\x07\x1b[2J\u009b1m\nsecond line", time.time(),
                      time.time()))
    conn.close()
    alerts = flowtui("alerts", "list", home=home)
    assert alerts.returncode == 0, alerts.stderr
    assert_terminal_safe(alerts)
    assert "a failed: ^[]0;OWNED^G^[[2J<U+009B>1m^Jsecond line" in alerts.stdout
    marked = flowtui("mark", "hello", "latest", "a", "--state", "failed", home=home,
                     pipelines=pipelines)
    assert marked.returncode == 0, marked.stderr
    assert_terminal_safe(marked)
