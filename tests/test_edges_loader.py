"""Loading that no hostile file can stop: a child process per import, bounded reads, every value
checked for type and range, absolute home paths (SPEC §2 "Loading and validation", issue 9)."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import flowtui, write
from daemon_support import runs, start, trigger, wait_for

from flowtui.runner import executor
from flowtui.runner.config import load_config
from flowtui.runner.loader import LoadError, LoadResult, load_folder

GOOD_YAML = "tasks:\n  x: echo good yaml\n"
GOOD_PY = """
    from flowtui import DAG, Bash, task

    with DAG("good_py"):
        a = Bash("a", "echo a")

        @task
        def b(ctx):
            print("b ran")

        a >> b
    """


def only_error(result: LoadResult) -> LoadError:
    assert len(result.errors) == 1, [str(e) for e in result.errors]
    return result.errors[0]


def alias_bomb() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 10):
        prev, cur = chr(ord("a") + level - 1), chr(ord("a") + level)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\ndag_id: bomb\nparams: {p: *j}\ntasks: {x: echo}\n"


def hostile_folder(pipelines: Path) -> list[str]:
    """Write one file per way to break a loader; return their names."""
    write(pipelines, "exits.py", "import os\nfrom flowtui import DAG\nos._exit(0)\n")
    write(pipelines, "sleeps.py", "import time\nfrom flowtui import DAG\ntime.sleep(3600)\n")
    write(pipelines, "eats.py", "from flowtui import DAG\nheap = []\n"
                                "while True:\n    heap.append(bytes(1 << 28))\n")
    write(pipelines, "bomb.yaml", alias_bomb())
    os.mkfifo(pipelines / "fifo.yaml")
    os.symlink("/dev/zero", pipelines / "zero.yaml")
    write(pipelines, "huge.yaml", "tasks:\n  x: {command: echo, retry_delay: 1.0e+20}\n")
    write(pipelines, "count.yaml", "tasks:\n  x: {command: echo, retries: 9223372036854775808}\n")
    write(pipelines, "never.yaml", 'schedule: "0 0 30 2 *"\ntasks: {x: echo}\n')
    write(pipelines, "window.yaml", 'tasks:\n  x: {command: echo, window: "24:00-21:00"}\n')
    write(pipelines, "good_yaml.yaml", GOOD_YAML)
    write(pipelines, "good_py.py", GOOD_PY)
    return ["exits.py", "sleeps.py", "eats.py", "bomb.yaml", "fifo.yaml", "zero.yaml",
            "huge.yaml", "count.yaml", "never.yaml", "window.yaml"]


# -- the acceptance: the CLI on a hostile folder ------------------------------------------------
@pytest.mark.long(7)
def test_dags_check_on_hostile_files_is_one_line_each_within_the_timeout(
        home: Path, pipelines: Path) -> None:
    (home / "flowtui.toml").write_text("dag_file_timeout = 2\n")
    bad = hostile_folder(pipelines)
    started = time.monotonic()
    proc = flowtui("dags", "check", home=home, pipelines=pipelines, timeout=90)
    took = time.monotonic() - started
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert took < 2 + 20, took  # one sleeping file costs the timeout, nothing else hangs
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for name in bad:
        mine = [line for line in lines if line.startswith(f"{pipelines / name}:")]
        assert len(mine) == 1, (name, proc.stdout)
    assert len(lines) == len(bad) + 1, proc.stdout  # and the summary line
    assert "12 file(s), 2 DAG(s), 10 error(s)" in lines[-1]
    text = proc.stdout
    assert "longer than 2s (dag_file_timeout)" in text
    assert "ended the import process (exit code 0)" in text
    assert "ran out of memory" in text
    assert "aliases expand to more than" in text
    assert "a FIFO" in text and "a character device" in text
    assert "maximum duration of 3650d" in text and "never fires" in text
    assert "from 0 to 1000" in text and "hours go from 00 to 23" in text
    for dag_id in ("good_yaml", "good_py"):
        run = flowtui("run", dag_id, home=home, pipelines=pipelines, timeout=90)
        assert run.returncode == 0, (run.stdout, run.stderr)
        assert "success" in run.stdout


@pytest.mark.long(14)
def test_the_daemon_keeps_its_heartbeat_and_runs_good_dags_beside_hostile_files(
        home: Path, pipelines: Path, runners: list) -> None:
    (home / "flowtui.toml").write_text("dag_file_timeout = 2\n")
    hostile_folder(pipelines)
    runner = start(runners, home, pipelines)

    def heartbeat() -> float:
        conn = sqlite3.connect(home / "flowtui.db")
        try:
            row = conn.execute("SELECT heartbeat_at FROM runners WHERE pid = ?",
                               (runner.proc.pid,)).fetchone()
        finally:
            conn.close()
        return row[0] if row and row[0] else 0.0

    first = wait_for(heartbeat, 30, "a first heartbeat")
    # Both runs go in at once; the heartbeat advances meanwhile.
    for dag_id in ("good_yaml", "good_py"):
        trigger(home, pipelines, dag_id)
    for dag_id in ("good_yaml", "good_py"):
        wait_for(lambda: runs(home, dag_id) and runs(home, dag_id)[0]["state"] == "success",
                 60, f"{dag_id} to succeed")
    wait_for(lambda: heartbeat() > first, 30, "the heartbeat to advance")
    assert runner.proc.poll() is None
    # A change to the folder reloads it, hostile files and all, and the runner lives on.
    write(pipelines, "later.yaml", "tasks:\n  y: echo later\n")
    trigger_after = wait_for(lambda: flowtui("trigger", "later", home=home,
                                             pipelines=pipelines).returncode == 0, 60,
                             "the new DAG to be triggerable")
    assert trigger_after
    wait_for(lambda: runs(home, "later") and runs(home, "later")[0]["state"] == "success", 60,
             "the new DAG to succeed")
    last = heartbeat()
    wait_for(lambda: heartbeat() > last, 30, "the heartbeat to advance after the reload")
    assert runner.proc.poll() is None


# -- Python files in their own process ----------------------------------------------------------
def test_a_python_file_that_exits_hangs_or_eats_memory_stops_nothing(pipelines: Path) -> None:
    write(pipelines, "a_exits.py", "import os\nfrom flowtui import DAG\nos._exit(3)\n")
    write(pipelines, "b_sleeps.py", "import time\nfrom flowtui import DAG\ntime.sleep(3600)\n")
    write(pipelines, "c_eats.py", "from flowtui import DAG\nx = bytearray(1 << 40)\n")
    write(pipelines, "d_good.py", GOOD_PY)
    write(pipelines, "e_good.yaml", GOOD_YAML)
    started = time.monotonic()
    result = load_folder(pipelines, timeout=1.0)
    assert time.monotonic() - started < 15
    assert sorted(result.dags) == ["e_good", "good_py"]
    errors = {Path(e.fileloc).name: e for e in result.errors}
    assert sorted(errors) == ["a_exits.py", "b_sleeps.py", "c_eats.py"]
    assert "ended the import process (exit code 3)" in errors["a_exits.py"].message
    assert "longer than 1s (dag_file_timeout)" in errors["b_sleeps.py"].message
    assert errors["c_eats.py"].line == 2
    assert "ran out of memory" in errors["c_eats.py"].message
    assert "\n" not in errors["c_eats.py"].message


def test_python_values_that_are_not_plain_data_are_named_in_the_error(pipelines: Path) -> None:
    write(pipelines, "p.py", """
        import datetime
        from flowtui import DAG, Bash

        class Weird:
            def __repr__(self):
                return "<Weird thing>"

        with DAG("p", start_date=datetime.datetime(2026, 1, 1)):
            Bash("a", "echo", retries=Weird())
        """)
    error = only_error(load_folder(pipelines))
    assert error.line == 9
    assert "task 'a': retries: must be a whole number from 0 to 1000, not <Weird thing>" \
        in error.message


def test_a_python_dag_keeps_its_datetime_start_date(pipelines: Path) -> None:
    write(pipelines, "p.py", """
        import datetime
        from flowtui import DAG, Bash

        with DAG("p", start_date=datetime.datetime(2026, 1, 1, 6, tzinfo=datetime.timezone.utc)):
            Bash("a", "echo")
        """)
    result = load_folder(pipelines)
    assert not result.errors, [str(e) for e in result.errors]
    assert result.dags["p"].start_date == 1767247200.0


def test_what_a_python_file_prints_at_import_does_not_reach_the_output(
        home: Path, pipelines: Path) -> None:
    write(pipelines, "p.py", """
        import os, sys
        from flowtui import DAG, Bash
        print("noise on stdout")
        os.write(1, b"raw noise\\n")
        print("noise on stderr", file=sys.stderr)
        with DAG("p"):
            Bash("a", "echo")
        """)
    proc = flowtui("dags", "check", home=home, pipelines=pipelines)
    assert proc.returncode == 0, proc.stdout
    assert "noise" not in proc.stdout + proc.stderr


# -- only regular files, each within a size -----------------------------------------------------
def test_fifo_device_and_oversized_files_are_one_error_each(pipelines: Path) -> None:
    os.mkfifo(pipelines / "a_fifo.yaml")
    os.symlink("/dev/zero", pipelines / "b_zero.yaml")
    os.mkfifo(pipelines / "c_fifo.py")
    write(pipelines, "d_big.yaml", "tasks: {x: echo}\n" + "#" * (1 << 20) + "\n")
    write(pipelines, "e_good.yaml", GOOD_YAML)
    result = load_folder(pipelines)
    errors = {Path(e.fileloc).name: e.message for e in result.errors}
    assert sorted(errors) == ["a_fifo.yaml", "b_zero.yaml", "c_fifo.py", "d_big.yaml"]
    assert "not a regular file (a FIFO)" in errors["a_fifo.yaml"]
    assert "not a regular file (a character device)" in errors["b_zero.yaml"]
    assert "not a regular file (a FIFO)" in errors["c_fifo.py"]
    assert "over the limit of 1048576 bytes (1 MiB)" in errors["d_big.yaml"]
    assert list(result.dags) == ["e_good"]


def test_a_yaml_alias_bomb_is_one_error_fast_and_small(pipelines: Path) -> None:
    write(pipelines, "bomb.yaml", alias_bomb())
    code = ("import resource, sys, time; from flowtui.runner.loader import load_folder; "
            "t = time.perf_counter(); r = load_folder(sys.argv[1]); "
            "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
            "len(r.errors)); print(r.errors[0])")
    proc = subprocess.run([sys.executable, "-P", "-c", code, str(pipelines)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    took, rss_kib, count = proc.stdout.splitlines()[0].split()
    assert count == "1"
    assert float(took) < 5 and int(rss_kib) < 300 * 1024
    assert "aliases expand to more than 100000 values" in proc.stdout


def test_a_recursive_alias_and_shared_defaults(pipelines: Path) -> None:
    write(pipelines, "loop.yaml", "params: &p {x: [*p]}\ntasks: {x: echo}\n")
    write(pipelines, "shared.yaml", """
        tasks:
          a: &t {command: echo, retries: 2}
          b: *t
        """)
    result = load_folder(pipelines)
    error = only_error(result)
    assert error.fileloc.endswith("loop.yaml")
    assert "an alias at line 1 refers to a value that holds it" in error.message
    assert result.dags["shared"].tasks["b"].retries == 2


# -- every value checked for type and range -----------------------------------------------------
@pytest.mark.parametrize("task_line, expected", [
    ("retry_delay: 1.0e+20", "retry_delay: 1e+20 is longer than the maximum duration of 3650d"),
    ("execution_timeout: .inf", "longer than the maximum duration of 3650d"),
    ("kill_grace: 99999999999999999999d", "longer than the maximum duration"),
    ("retries: 9223372036854775808", "retries: must be a whole number from 0 to 1000"),
    ("retries: -1", "retries: must be a whole number from 0 to 1000"),
    ("priority_weight: 9223372036854775808", "priority_weight: must be a whole number from"),
    ("pool_slots: 9223372036854775808", "pool_slots: must be a whole number from 1 to"),
    ("retry_on_exit_codes: [1, 300]", "exit codes from 1 to 255"),
    ('window: "24:00-21:00"', "hours go from 00 to 23"),
    ('window: "00:00-00:00"', "is empty and never opens"),
    ('window: "7-9"', 'must look like "06:00-22:00"'),
])
def test_task_values_out_of_range_are_load_errors(pipelines: Path, task_line: str,
                                                  expected: str) -> None:
    write(pipelines, "d.yaml", f"tasks:\n  x:\n    command: echo\n    {task_line}\n")
    error = only_error(load_folder(pipelines))
    assert error.line == 4
    assert expected in error.message, error.message
    assert error.message.startswith("task 'x': ")


@pytest.mark.parametrize("dag_line, expected", [
    ('schedule: "0 0 30 2 *"', "never fires"),
    ('schedule: "0 0 31 4,6,9,11 *"', "never fires"),
    ("circuit_breaker: 5", "circuit_breaker: must be a mapping such as {consecutive_failures: 5}"),
    ("circuit_breaker: {consecutive_failures: 0}", "consecutive_failures must be a whole number"),
    ("sla: {within: 1.0e+20}", "sla: within: 1e+20 is longer than the maximum duration"),
    ("dagrun_timeout: 4000d", "longer than the maximum duration of 3650d"),
    ("max_active_runs: 9223372036854775808", "max_active_runs: must be a whole number from 1"),
    ("max_active_tasks: -1", "max_active_tasks: must be a whole number from 1"),
    ("catchup: maybe", "catchup: must be true or false"),
    ("start_date: 0001-01-01", "start_date: 0001-01-01T00:00:00 is out of range"),
    (f"dag_id: {'d' * 300}", "is 300 characters long; at most 100"),
    ("params: {when: .nan}", "params: when: must be a string, number"),
])
def test_dag_values_out_of_range_are_load_errors(pipelines: Path, dag_line: str,
                                                 expected: str) -> None:
    write(pipelines, "d.yaml", f"{dag_line}\ntasks: {{x: echo}}\n")
    error = only_error(load_folder(pipelines))
    assert error.line == 1
    assert expected in error.message, error.message


def test_a_long_task_id_is_a_load_error(pipelines: Path) -> None:
    write(pipelines, "d.yaml", f"tasks:\n  {'t' * 101}: echo\n")
    error = only_error(load_folder(pipelines))
    assert error.line == 2
    assert "is 101 characters long; at most 100 are allowed" in error.message


def test_python_dags_are_checked_by_the_same_table(pipelines: Path) -> None:
    write(pipelines, "a.py", """
        from flowtui import DAG, Bash
        with DAG("a", circuit_breaker=5):
            Bash("x", "echo")
        """)
    write(pipelines, "b.py", """
        from flowtui import DAG, Bash
        with DAG("b"):
            Bash("x", "echo", retry_delay=1e20)
        """)
    write(pipelines, "c.py", """
        from flowtui import DAG, Bash
        with DAG("c", schedule="0 0 30 2 *"):
            Bash("x", "echo", window="00:00-00:00")
        """)
    errors = {Path(e.fileloc).name: e for e in load_folder(pipelines).errors}
    assert "circuit_breaker: must be a mapping" in errors["a.py"].message
    assert errors["b.py"].line == 3 and "maximum duration of 3650d" in errors["b.py"].message
    assert errors["c.py"].line == 2 and "never fires" in errors["c.py"].message


def test_values_at_the_edges_of_their_ranges_load(pipelines: Path) -> None:
    write(pipelines, "d.yaml", """
        schedule: "0 0 29 2 *"
        circuit_breaker: {consecutive_failures: 3}
        sla: {within: 3650d}
        tasks:
          night: {command: echo, window: "22:00-06:00", retries: 1000}
          evening: {command: echo, window: "18:00-24:00", priority_weight: -5}
          long: {command: echo, execution_timeout: 3650d, retry_on_exit_codes: [1, 255]}
        """)
    result = load_folder(pipelines)
    assert not result.errors, [str(e) for e in result.errors]
    dag = result.dags["d"]
    assert dag.circuit_breaker == {"consecutive_failures": 3}
    assert dag.tasks["evening"].window == "18:00-24:00"
    assert dag.tasks["long"].execution_timeout == 3650 * 86400.0


# -- a relative --home --------------------------------------------------------------------------
def test_relative_home_and_pipelines_are_made_absolute(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config("rel-home", "rel-pipes")
    assert config.home == tmp_path / "rel-home"
    assert config.pipelines == tmp_path / "rel-pipes"


def test_a_relative_home_records_absolute_paths_that_work_from_anywhere(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "pipes").mkdir(parents=True)
    (work / "elsewhere").mkdir()
    write(work / "pipes", "d.yaml", """
        tasks:
          x: {command: echo written from elsewhere, cwd: elsewhere}
        """)
    argv = [sys.executable, "-P", "-m", "flowtui", "--home", "home", "--pipelines", "pipes"]
    run = subprocess.run([*argv, "run", "d"], cwd=work, capture_output=True, text=True,
                         timeout=90)
    assert run.returncode == 0, (run.stdout, run.stderr)
    conn = sqlite3.connect(work / "home" / "flowtui.db")
    log_path, exit_path = conn.execute("SELECT log_path, exit_path FROM tries").fetchone()
    conn.close()
    assert Path(log_path).is_absolute() and Path(exit_path).is_absolute()
    assert executor.read_exit_status(exit_path) == 0  # written by a task in another folder
    logs = flowtui("logs", "d", "latest", "x", home=work / "home")
    assert logs.returncode == 0, logs.stderr
    assert "written from elsewhere" in logs.stdout
