"""Crash safety at the edges: a live task never looks dead, an exec keeps its exit status, and
the whole kill sequence reaches every process of a try, with or without a runner alive."""
from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

from conftest import flowtui, write
from daemon_support import alive, runs, start, tasks, tries, trigger, wait_for

from flowtui.runner import executor
from flowtui.runner.endings import MAX_RETRY_DELAY, retry_delay
from flowtui.runner.model import TaskSpec


def _forget_pid(home: Path) -> None:
    """Leave the store as a runner that died between spawning a task and recording its pid."""
    conn = sqlite3.connect(home / "flowtui.db")
    with conn:
        conn.execute("UPDATE tries SET pid = NULL, pid_start = NULL WHERE end_date IS NULL")
        conn.execute("UPDATE task_instances SET pid = NULL WHERE state = 'running'")
    conn.close()


def _read_pid(path: Path) -> int:
    return wait_for(lambda: path.exists() and path.read_text().strip().isdigit()
                    and int(path.read_text()), what=f"a pid in {path.name}")


def test_a_task_whose_pid_was_never_recorded_is_adopted_not_zombied(
        home: Path, pipelines: Path, tmp_path: Path, runners: list) -> None:
    go, ran = tmp_path / "go", tmp_path / "ran"
    write(pipelines, "window.yaml", f"""
        dag_id: window
        tasks:
          t:
            command: "while [ ! -e {go} ]; do sleep 0.05; done; echo ran >> {ran}"
            retries: 2
            retry_delay: 0
    """)
    first = start(runners, home, pipelines)
    trigger(home, pipelines, "window")
    wait_for(lambda: tasks(home, "window").get("t", {}).get("pid"), what="the task to run")
    first.kill9()
    _forget_pid(home)
    start(runners, home, pipelines)
    # Adopted: the try is watched again (its pid found by the try's mark), not ended as a zombie.
    wait_for(lambda: tries(home, "window", "t") and tries(home, "window", "t")[0][6], 20,
             "the adopting runner to record the pid it found")
    assert tasks(home, "window")["t"]["state"] == "running"
    go.touch()
    wait_for(lambda: runs(home, "window")[0]["state"] == "success", 20, "the run to succeed")
    assert [row[:3] for row in tries(home, "window", "t")] == [(1, "success", 0)]
    assert ran.read_text() == "ran\n"  # it ran once


def test_a_command_that_execs_keeps_its_exit_status_across_a_runner_death(
        home: Path, pipelines: Path, tmp_path: Path, runners: list) -> None:
    go, ran = tmp_path / "go", tmp_path / "ran"
    write(pipelines, "execs.yaml", f"""
        dag_id: execs
        tasks:
          t:
            command: >-
              exec python3 -c "import os, time;
              open('{ran}', 'a').write('ran\\n');
              [time.sleep(0.05) for _ in iter(lambda: os.path.exists('{go}'), True)]"
            retries: 2
            retry_delay: 0
    """)
    first = start(runners, home, pipelines)
    trigger(home, pipelines, "execs")
    pid = wait_for(lambda: tasks(home, "execs").get("t", {}).get("pid"), what="the task to run")
    wait_for(lambda: ran.exists(), what="the exec'd program to start")
    first.kill9()
    go.touch()
    wait_for(lambda: not alive(pid), 10, "the task to end while no runner lives")
    start(runners, home, pipelines)
    wait_for(lambda: runs(home, "execs")[0]["state"] in ("success", "failed"), 20,
             "the run to end")
    assert [row[:3] for row in tries(home, "execs", "t")] == [(1, "success", 0)]
    assert ran.read_text() == "ran\n"


def test_kill_with_no_runner_alive_ends_a_task_that_ignores_sigterm(
        home: Path, pipelines: Path, tmp_path: Path, runners: list) -> None:
    pidfile = tmp_path / "pid"
    write(pipelines, "stubborn.yaml", f"""
        dag_id: stubborn
        tasks:
          t:
            command: "trap '' TERM; echo $$ > {pidfile}; while :; do sleep 0.05; done"
            kill_grace: 1s
    """)
    first = start(runners, home, pipelines)
    trigger(home, pipelines, "stubborn")
    pid = _read_pid(pidfile)
    first.kill9()
    result = flowtui("kill", "stubborn", "latest", "t", home=home, pipelines=pipelines)
    assert result.returncode == 0, result.stderr
    assert not alive(pid)  # gone when the command returns: SIGTERM, the grace, then SIGKILL
    assert tasks(home, "stubborn")["t"]["state"] == "failed"


def test_clear_with_no_runner_alive_never_leaves_two_copies(
        home: Path, pipelines: Path, tmp_path: Path, runners: list) -> None:
    pids = tmp_path / "pids"
    write(pipelines, "copies.yaml", f"""
        dag_id: copies
        tasks:
          t:
            command: "trap '' TERM; echo $$ >> {pids}; while :; do sleep 0.05; done"
            kill_grace: 1s
    """)
    first = start(runners, home, pipelines)
    trigger(home, pipelines, "copies")
    wait_for(lambda: pids.exists() and pids.read_text().strip(), what="the first copy")
    first.kill9()
    result = flowtui("clear", "copies", "latest", "t", "--yes", home=home, pipelines=pipelines)
    assert result.returncode == 0, result.stderr
    start(runners, home, pipelines)
    wait_for(lambda: len(pids.read_text().split()) == 2, 20, "the cleared task to start again")
    old, new = (int(p) for p in pids.read_text().split())
    assert not alive(old) and alive(new)


def test_a_double_forked_grandchild_does_not_survive_a_timeout(
        home: Path, pipelines: Path, tmp_path: Path) -> None:
    grandchild = tmp_path / "grandchild"
    write(pipelines, "escape.yaml", f"""
        dag_id: escape
        tasks:
          t:
            command: >-
              (setsid nohup sh -c 'echo $$ > {grandchild}; exec sleep 3132' >/dev/null 2>&1 &);
              sleep 3133
            execution_timeout: 1s
            kill_grace: 1s
    """)
    result = flowtui("run", "escape", home=home, pipelines=pipelines)
    assert result.returncode == 1
    pid = _read_pid(grandchild)
    wait_for(lambda: not alive(pid), 5, "the escaped grandchild to be killed")


def test_a_double_forked_grandchild_does_not_survive_a_kill_with_no_runner(
        home: Path, pipelines: Path, tmp_path: Path, runners: list) -> None:
    grandchild = tmp_path / "grandchild"
    write(pipelines, "escape2.yaml", f"""
        dag_id: escape2
        tasks:
          t:
            command: >-
              (setsid nohup sh -c 'trap "" TERM; echo $$ > {grandchild};
              while :; do sleep 0.05; done' >/dev/null 2>&1 &);
              sleep 3133
            kill_grace: 1s
    """)
    first = start(runners, home, pipelines)
    trigger(home, pipelines, "escape2")
    pid = _read_pid(grandchild)
    first.kill9()
    result = flowtui("kill", "escape2", "latest", "t", home=home, pipelines=pipelines)
    assert result.returncode == 0, result.stderr
    assert not alive(pid)


def test_retry_delays_never_exceed_a_day() -> None:
    spec = TaskSpec(task_id="t", command="true", retry_delay=300.0,
                    retry_exponential_backoff=True, retry_jitter=0.5)
    assert retry_delay(spec, 2) <= 900.0
    assert retry_delay(spec, 10) <= MAX_RETRY_DELAY  # 300 * 2**9 s would be 42.7 h
    assert retry_delay(spec, 5000) <= MAX_RETRY_DELAY  # no overflow either


def _mark_of(home: Path, runner, task_id: str, try_number: int = 1) -> str:
    """The mark (and status key) of a try of the `gated` DAG's latest run started by ``runner``."""
    conn = sqlite3.connect(home / "flowtui.db")
    runner_id = conn.execute("SELECT id FROM runners WHERE pid = ?",
                             (runner.proc.pid,)).fetchone()[0]
    conn.close()
    run_folder = f"{home}/logs/gated/{runs(home, 'gated')[0]['run_id']}"
    return executor.exit_path_of(run_folder, task_id, try_number, runner_id)


def _gated(pipelines: Path, tmp_path: Path, b_command: str) -> tuple[Path, Path]:
    go, ran = tmp_path / "go", tmp_path / "ran"
    write(pipelines, "gated.yaml", f"""
        dag_id: gated
        tasks:
          a: {{command: "while [ ! -e {go} ]; do sleep 0.05; done"}}
          b: {{command: "echo ran >> {ran}{b_command}", deps: [a], execution_timeout: 2s}}
    """)
    return go, ran


def _kill_while_b_is_gated(home: Path, pipelines: Path, tmp_path: Path, runners: list,
                           b_command: str = "") -> tuple[sqlite3.Connection, int, Path]:
    """A runner killed -9 after it started b's process and before b's try was committed:
    the database's write lock is held (another process) while a ends, so the runner waits to
    commit with b's process started. Returns the lock's connection, b's pid, and ``ran``."""
    go, ran = _gated(pipelines, tmp_path, b_command)
    first = start(runners, home, pipelines)
    trigger(home, pipelines, "gated")
    wait_for(lambda: tasks(home, "gated").get("a", {}).get("pid"), what="a to run")
    lock = sqlite3.connect(home / "flowtui.db", isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # every write of the runner's waits from now
    go.touch()
    mark = _mark_of(home, first, "b")
    pid = wait_for(lambda: executor.find_leaders({mark}).get(mark), 20, "b's process to start")
    assert not ran.exists()  # started, and waiting: its try is not in the database
    first.kill9()
    wait_for(lambda: not alive(pid), 10, "b's process to see its runner gone and end")
    assert not ran.exists()  # its command never ran
    return lock, pid, ran


def _record_b_as_committed(lock: sqlite3.Connection, pid: int) -> None:
    """What the dead runner's commit would have written: b's try, running, with its pid."""
    lock.execute("INSERT INTO tries (run_pk, task_id, try_number, state, start_date, log_path, "
                 "exit_path, runner_id, pid) SELECT run_pk, 'b', 1, 'running', start_date, "
                 "replace(log_path, '/a/', '/b/'), replace(exit_path, '#a/', '#b/'), runner_id, "
                 "? FROM tries WHERE task_id = 'a'", (pid,))
    lock.execute("UPDATE task_instances SET state = 'running', try_number = 1, pid = ? "
                 "WHERE task_id = 'b'", (pid,))
    lock.execute("COMMIT")
    lock.close()


def test_a_task_started_but_not_yet_recorded_runs_nothing_when_its_runner_dies(
        home: Path, pipelines: Path, tmp_path: Path, runners: list) -> None:
    lock, _, ran = _kill_while_b_is_gated(home, pipelines, tmp_path, runners)
    lock.execute("ROLLBACK")
    lock.close()
    start(runners, home, pipelines)
    wait_for(lambda: runs(home, "gated")[0]["state"] == "success", 20, "the run to succeed")
    assert [row[:3] for row in tries(home, "gated", "b")] == [(1, "success", 0)]
    assert ran.read_text() == "ran\n"  # once


def test_a_try_recorded_whose_gate_never_opened_starts_afresh_uncounted(
        home: Path, pipelines: Path, tmp_path: Path, runners: list) -> None:
    """As above, but the runner died after committing b's try and before opening its gate:
    the store says b runs (pid and all); its process ended having run nothing. b starts again
    as try 1, not a zombie and no retry used (it has none)."""
    lock, pid, ran = _kill_while_b_is_gated(home, pipelines, tmp_path, runners)
    _record_b_as_committed(lock, pid)
    start(runners, home, pipelines)
    wait_for(lambda: runs(home, "gated")[0]["state"] in ("success", "failed"), 20,
             "the run to end")
    assert runs(home, "gated")[0]["state"] == "success"
    assert [row[:3] for row in tries(home, "gated", "b")] == [(1, "success", 0)]
    assert ran.read_text() == "ran\n"


def test_a_forgotten_try_s_unstarted_status_is_never_read_as_its_restart_s(
        home: Path, pipelines: Path, tmp_path: Path, runners: list) -> None:
    """b's try 1 is forgotten as never started (above) and started again, as try 1, by the
    next runner; it runs, and dies with its runner (kill -9 of both: no status written). The
    runner after that must find a try that ran and died (a zombie: b has no retries, the run
    fails), not the forgotten one's "unstarted" and run b's command a second time."""
    go2 = tmp_path / "go2"
    lock, pid, ran = _kill_while_b_is_gated(home, pipelines, tmp_path, runners,
                                            f"; while [ ! -e {go2} ]; do sleep 0.05; done")
    _record_b_as_committed(lock, pid)
    second = start(runners, home, pipelines)
    wait_for(ran.exists, 20, "b to run again as try 1")
    mark = _mark_of(home, second, "b")
    again = wait_for(lambda: executor.find_leaders({mark}).get(mark), 20, "b's shell")
    wait_for(lambda: tries(home, "gated", "b") and tries(home, "gated", "b")[0][6] == again, 20,
             "b's new try recorded")
    second.kill9()
    os.killpg(again, signal.SIGKILL)  # b dies unwatched, with no status written
    wait_for(lambda: not alive(again), 10, "b to be gone")
    go2.touch()
    start(runners, home, pipelines)
    wait_for(lambda: runs(home, "gated")[0]["state"] in ("success", "failed"), 20,
             "the run to end")
    assert ran.read_text() == "ran\n"  # once: the try that ran is not forgotten
    (number, state, code, reason, *_), = tries(home, "gated", "b")
    assert (number, state, code) == (1, "failed", None) and "zombie" in reason


def test_a_task_s_timeout_counts_from_its_command_s_start_not_from_a_wait_for_the_database(
        home: Path, pipelines: Path, tmp_path: Path, runners: list) -> None:
    """b's process starts while the database is locked (a long `db clean`, a backup) and waits
    there, longer than b's 2 s execution_timeout, for its try to be recorded. Its command then
    runs and succeeds: the wait is not the task's time."""
    go, ran = _gated(pipelines, tmp_path, "")
    runner = start(runners, home, pipelines)
    trigger(home, pipelines, "gated")
    wait_for(lambda: tasks(home, "gated").get("a", {}).get("pid"), what="a to run")
    lock = sqlite3.connect(home / "flowtui.db", isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    go.touch()
    mark = _mark_of(home, runner, "b")
    pid = wait_for(lambda: executor.find_leaders({mark}).get(mark), 20, "b's process to start")
    born = executor.process_start_time(pid)
    wait_for(lambda: time.time() - born > 3.0, 10, "b to have waited past its timeout")
    assert alive(pid) and not ran.exists()
    released = time.time()
    lock.execute("ROLLBACK")
    lock.close()
    wait_for(lambda: runs(home, "gated")[0]["state"] in ("success", "failed"), 30,
             "the run to end")
    assert [row[:3] for row in tries(home, "gated", "b")] == [(1, "success", 0)]
    assert ran.read_text() == "ran\n"
    # Its recorded start is its command's (a runner adopting it would count from there).
    assert tries(home, "gated", "b")[0][4] >= released


def test_a_task_killed_by_a_signal_while_no_runner_watches_is_not_read_as_a_success(
        home: Path, pipelines: Path, runners: list) -> None:
    """bash runs its EXIT trap when SIGTERM ends it, with the status of the last command that
    finished (0 here): the next runner read the killed task as a success and ran its
    downstream. Its status is now the signal's, 143."""
    write(pipelines, "killed.yaml", """
        dag_id: killed
        tasks:
          t: {command: "true; sleep 30", shell: bash, retries: 0}
          after: {command: "true", deps: [t]}
    """)
    first = start(runners, home, pipelines)
    trigger(home, pipelines, "killed")
    pid = wait_for(lambda: tasks(home, "killed").get("t", {}).get("pid"), what="t to run")
    first.kill9()
    os.killpg(pid, signal.SIGTERM)  # a service manager stopping everything, say
    wait_for(lambda: not alive(pid), 10, "t to end")
    start(runners, home, pipelines)
    wait_for(lambda: runs(home, "killed")[0]["state"] in ("success", "failed"), 20,
             "the run to end")
    assert [row[:3] for row in tries(home, "killed", "t")] == [(1, "failed", 143)]
    assert tasks(home, "killed")["after"]["state"] == "upstream_failed"
