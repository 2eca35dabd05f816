"""The engine against real subprocesses and a real SQLite file."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from conftest import write
from flowtui.runner.clock import ManualClock
from helpers import log_text, run_dag, tries


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state != b"Z"


def _wait_dead(pids: list[int], deadline: float) -> list[int]:
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def test_retry_delays_double_with_backoff(home: Path, pipelines: Path) -> None:
    write(pipelines, "r.yaml", """
        dag_id: r
        tasks:
          flaky:
            command: exit 3
            retries: 3
            retry_delay: 5m
            retry_exponential_backoff: true
            max_retry_delay: 1h
    """)
    store, run, tis = run_dag(home, pipelines, "r", clock=ManualClock(autojump=True))
    attempts = tries(store, run, "flaky")
    assert [t.try_number for t in attempts] == [1, 2, 3, 4]
    gaps = [b.start_date - a.end_date for a, b in zip(attempts, attempts[1:])]
    for gap, expected in zip(gaps, [300.0, 600.0, 1200.0]):
        assert expected <= gap < expected + 0.3, gaps
    assert tis["flaky"].state == "failed"
    assert tis["flaky"].exit_code == 3
    assert [t.exit_code for t in attempts] == [3, 3, 3, 3]


def test_retry_delay_is_capped(home: Path, pipelines: Path) -> None:
    write(pipelines, "r.yaml", """
        dag_id: r
        tasks:
          flaky: {command: exit 1, retries: 3, retry_delay: 3m,
                  retry_exponential_backoff: true, max_retry_delay: 5m}
    """)
    store, run, _ = run_dag(home, pipelines, "r", clock=ManualClock(autojump=True))
    attempts = tries(store, run, "flaky")
    gaps = [b.start_date - a.end_date for a, b in zip(attempts, attempts[1:])]
    for gap, expected in zip(gaps, [180.0, 300.0, 300.0]):
        assert expected <= gap < expected + 0.25, gaps


def test_retry_on_exit_codes_limits_what_is_retried(home: Path, pipelines: Path) -> None:
    write(pipelines, "r.yaml", """
        dag_id: r
        tasks:
          permanent: {command: exit 2, retries: 3, retry_delay: 0, retry_on_exit_codes: [75]}
          transient:
            command: '[ "$FLOWTUI_TRY_NUMBER" -ge 2 ] || exit 75'
            retries: 3
            retry_delay: 0
            retry_on_exit_codes: [75]
    """)
    store, run, tis = run_dag(home, pipelines, "r")
    assert tis["permanent"].state == "failed" and tis["permanent"].try_number == 1
    assert tis["transient"].state == "success" and tis["transient"].try_number == 2


def test_timeout_ends_the_whole_tree(home: Path, pipelines: Path, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    write(pipelines, "t.yaml", f"""
        dag_id: t
        tasks:
          stuck:
            execution_timeout: 0.5s
            kill_grace: 1s
            command: |
              sleep 60 & echo $! >> {pids}
              sh -c 'trap "" TERM; sleep 60' & echo $! >> {pids}
              setsid sleep 60 & echo $! >> {pids}
              sleep 0.2
              ps -o pid= --ppid $! >> {pids} 2>/dev/null || true
              sleep 60
    """)
    started = time.monotonic()
    store, run, tis = run_dag(home, pipelines, "t")
    assert tis["stuck"].state == "failed"
    assert "execution_timeout" in tis["stuck"].reason
    recorded = [int(p) for p in pids.read_text().split()]
    assert len(recorded) >= 3
    assert _wait_dead(recorded, time.monotonic() + 3) == []
    assert time.monotonic() - started < 10
    assert run.state == "failed"


def test_skip_exit_code(home: Path, pipelines: Path) -> None:
    write(pipelines, "s.yaml", """
        dag_id: s
        tasks:
          default_code: {command: exit 99}
          custom_code: {command: exit 42, skip_exit_code: 42}
          not_a_skip: {command: exit 99, skip_exit_code: 42}
          after: {command: "true", deps: [default_code]}
    """)
    _, run, tis = run_dag(home, pipelines, "s")
    assert tis["default_code"].state == "skipped"
    assert tis["custom_code"].state == "skipped"
    assert tis["not_a_skip"].state == "failed"
    assert tis["after"].state == "skipped"  # all_success with a skipped upstream


def test_every_try_has_its_own_log_and_row(home: Path, pipelines: Path) -> None:
    write(pipelines, "l.yaml", """
        dag_id: l
        tasks:
          t:
            command: 'echo "try $FLOWTUI_TRY_NUMBER"; [ "$FLOWTUI_TRY_NUMBER" -ge 2 ]'
            retries: 1
            retry_delay: 0
    """)
    store, run, tis = run_dag(home, pipelines, "l")
    attempts = tries(store, run, "t")
    assert [a.state for a in attempts] == ["failed", "success"]
    assert log_text(store, run, "t", 1) == "try 1\n"
    assert log_text(store, run, "t", 2) == "try 2\n"
    expected = home / "logs" / "l" / run.run_id / "t" / "2.log"
    assert attempts[1].log_path == str(expected)
    # The exit code survives in the run's exit-status file, written by the task's own shell.
    from flowtui.runner import executor

    assert executor.read_exit_status(attempts[0].exit_path) == 1
    assert executor.read_exit_status(attempts[1].exit_path) == 0
    key = [a.exit_path.rpartition("#")[2] for a in attempts]
    assert (home / "logs" / "l" / run.run_id / ".exits").read_text() == \
        f"{key[0]} 1\n{key[1]} 0\n"


def test_output_protocol_progress_and_metadata(home: Path, pipelines: Path) -> None:
    write(pipelines, "p.yaml", """
        dag_id: p
        tasks:
          t:
            command: |
              echo "::flowtui progress 450/1000"
              echo "::flowtui metadata rows=150000 quality=0.99 table=orders"
              printf "::flowtui heartbeat"
    """)
    store, run, _ = run_dag(home, pipelines, "p")
    attempt = tries(store, run, "t")[0]
    assert attempt.progress == 45.0
    assert attempt.metadata == {"rows": 150000, "quality": 0.99, "table": "orders"}


def test_environment_and_templates(home: Path, pipelines: Path) -> None:
    write(pipelines, "e.yaml", """
        dag_id: e
        timezone: Europe/Berlin
        params: {source: prod}
        env: {WAREHOUSE: "dw-{{ ds_nodash }}"}
        tasks:
          t:
            command: >-
              echo {{ ds }} {{ params.source }} {{ task_id }} {{ try_number }};
              echo $FLOWTUI_DAG_ID $FLOWTUI_TASK_ID $FLOWTUI_TRY_NUMBER $FLOWTUI_DS $WAREHOUSE;
              echo $FLOWTUI_PARAMS
    """)
    from flowtui.runner.runs import parse_date

    store, run, _ = run_dag(home, pipelines, "e", conf={"source": "staging"},
                            logical_date=parse_date("2026-03-29", "Europe/Berlin"))
    lines = log_text(store, run, "t").splitlines()
    assert lines[0] == "2026-03-29 staging t 1"
    assert lines[1] == "e t 1 2026-03-29 dw-20260329"
    assert json.loads(lines[2]) == {"source": "staging"}


def test_python_tasks_run_in_their_own_process(home: Path, pipelines: Path) -> None:
    write(pipelines, "py.py", """
        import os
        from flowtui import DAG, Bash, task

        with DAG("py", params={"n": 3}):
            @task
            def ok(ctx):
                ctx.progress(1, 2)
                ctx.metadata(rows=ctx.params["n"])
                print("pid", os.getpid(), ctx.ds)

            @task(retries=0)
            def boom(ctx):
                raise ValueError("bad input row 17")

            @task
            def skipper(ctx):
                ctx.skip("nothing to do")

            ok >> [boom, skipper]
    """)
    store, run, tis = run_dag(home, pipelines, "py")
    assert tis["ok"].state == "success"
    pid_line = [l for l in log_text(store, run, "ok").splitlines() if l.startswith("pid ")][0]
    assert int(pid_line.split()[1]) != os.getpid()
    assert tries(store, run, "ok")[0].metadata == {"rows": 3}
    assert tis["boom"].state == "failed"
    log = log_text(store, run, "boom")
    assert "Traceback" in log and "ValueError: bad input row 17" in log
    assert tis["skipper"].state == "skipped"


def test_priority_orders_ready_tasks(home: Path, pipelines: Path) -> None:
    (home / "flowtui.toml").write_text("parallelism = 1\n")
    write(pipelines, "p.yaml", """
        dag_id: p
        tasks:
          low: {command: "true", priority_weight: 1}
          high: {command: "true", priority_weight: 10}
          mid: {command: "true", priority_weight: 1}
          after_mid: {command: "true", deps: [mid], priority_weight: 5}
    """)
    store, run, tis = run_dag(home, pipelines, "p")
    order = sorted(tis.values(), key=lambda t: t.start_date or 0)
    # high (10), then mid (1 + downstream 5 = 6); once mid is done after_mid (5) outranks low (1).
    assert [t.task_id for t in order] == ["high", "mid", "after_mid", "low"]


def test_pools_and_parallelism_bound_concurrency(home: Path, pipelines: Path) -> None:
    (home / "flowtui.toml").write_text("parallelism = 4\n[pools]\ndb = 2\n")
    tasks = "\n".join(f"  d{i}: {{command: 'sleep 0.3', pool: db}}" for i in range(4))
    tasks += "\n" + "\n".join(f"  f{i}: {{command: 'sleep 0.3'}}" for i in range(4))
    tasks += "\n  big: {command: 'sleep 0.1', pool: db, pool_slots: 2}"
    write(pipelines, "c.yaml", "dag_id: c\nmax_active_tasks: 16\ntasks:\n" + tasks + "\n")
    store, run, tis = run_dag(home, pipelines, "c")
    assert all(t.state == "success" for t in tis.values())

    def peak(selected: list) -> int:
        points = sorted([(t.start_date, 1) for t in selected] + [(t.end_date, -1) for t in selected],
                        key=lambda p: (p[0], p[1]))
        level = best = 0
        for _, delta in points:
            level += delta
            best = max(best, level)
        return best

    assert peak(list(tis.values())) <= 4
    db_tasks = [t for t in tis.values() if t.pool == "db"]
    weighted = sorted([(t.start_date, t.pool_slots) for t in db_tasks] +
                      [(t.end_date, -t.pool_slots) for t in db_tasks], key=lambda p: (p[0], p[1]))
    level = best = 0
    for _, delta in weighted:
        level += delta
        best = max(best, level)
    assert best <= 2


def test_max_active_tasks_bounds_a_dag(home: Path, pipelines: Path) -> None:
    tasks = "\n".join(f"  t{i}: {{command: 'sleep 0.2'}}" for i in range(6))
    write(pipelines, "m.yaml", "dag_id: m\nmax_active_tasks: 2\ntasks:\n" + tasks + "\n")
    store, run, tis = run_dag(home, pipelines, "m")
    starts = sorted(t.start_date for t in tis.values())
    ends = sorted(t.end_date for t in tis.values())
    # With 2 at a time, the third start comes after the first end.
    assert starts[2] >= ends[0]


def test_dagrun_timeout_fails_the_run(home: Path, pipelines: Path) -> None:
    write(pipelines, "d.yaml", """
        dag_id: d
        dagrun_timeout: 0.5s
        tasks:
          long: {command: sleep 30, kill_grace: 1s}
          later: {command: "true", deps: [long]}
    """)
    started = time.monotonic()
    _, run, tis = run_dag(home, pipelines, "d")
    assert time.monotonic() - started < 5
    assert run.state == "failed"
    assert tis["long"].state == "failed" and "dagrun_timeout" in tis["long"].reason
    assert tis["later"].state == "skipped"


def engine_and_run(home: Path, pipelines: Path, dag_id: str):
    """An engine in this process, and a manual run of ``dag_id`` created for it."""
    from flowtui.runner.config import load_config
    from flowtui.runner.engine import Engine
    from flowtui.runner.loader import load_folder
    from flowtui.runner.runs import create_manual_run
    from flowtui.store import Store

    dag = load_folder(pipelines).dags[dag_id]
    config = load_config(home, pipelines)
    store = Store.open(config.db_path)
    runner_id = store.register_runner("run")
    engine = Engine(store, config, runner_id)
    run = create_manual_run(store, dag, logical_date=None, conf={}, runner_id=runner_id)
    return store, engine, dag, run


def test_waiting_tasks_say_why(home: Path, pipelines: Path) -> None:
    write(pipelines, "w.yaml", """
        dag_id: w
        tasks:
          a: {command: "sleep 0.3"}
          b: {command: "true", deps: [a]}
          c: {command: "true", deps: [a, b], trigger_rule: one_failed}
    """)
    store, engine, dag, run = engine_and_run(home, pipelines, "w")
    engine.start_run(dag, run)
    engine.turn()  # starts a, then commits
    reasons = {t.task_id: t.reason for t in store.task_instances(run.pk)}
    assert reasons["b"] == "waiting for upstream a"
    assert reasons["c"].startswith("trigger rule one_failed not met yet")
    engine.run_until_done()
    engine.close()


def test_every_try_is_recorded_with_its_pid_in_the_commit_that_lets_it_run(
        home: Path, pipelines: Path) -> None:
    """A try's process starts before its try is committed (gated: it runs nothing until
    then), so the try's row is written once, with its pid: no statement of its own for the
    pid on the path from one task to the next. The try and the task instance keep it."""
    write(pipelines, "c.yaml", """
        dag_id: c
        tasks:
          a: {command: "true"}
          b: {command: "true", deps: [a]}
    """)
    store, engine, dag, run = engine_and_run(home, pipelines, "c")
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    engine.start_run(dag, run)
    engine.run_until_done()
    engine.close()
    tries_ = {t: (pid, beat) for t, pid, beat in store.conn.execute(
        "SELECT task_id, pid, heartbeat_at FROM tries")}
    assert all(pid and beat for pid, beat in tries_.values()), tries_
    assert dict(store.conn.execute("SELECT task_id, pid FROM task_instances")) == \
        {t: pid for t, (pid, _) in tries_.items()}
    assert [s for s in statements if s.startswith("UPDATE tries SET pid = ")] == []
    for task_id, (pid, _) in tries_.items():
        insert = next(s for s in statements if s.startswith("INSERT INTO tries")
                      and f"'{task_id}', 1, 'running'" in s)
        assert f", {pid}, " in insert


def test_a_closed_engine_leaves_no_thread_or_process_behind(home: Path,
                                                          pipelines: Path) -> None:
    """What an engine starts ends with it: the process making a run's log folders ahead of
    its tasks (a foreground `flowtui run`, each backfill or operator action is applied in a
    process that goes on) and the thread copying the write-ahead log."""
    import threading

    import psutil

    mine = ("flowtui-checkpoint",)

    def makers() -> set[int]:
        return {p.pid for p in psutil.Process().children() if "-c" in p.cmdline()
                and any("os.makedirs" in a for a in p.cmdline())}

    write(pipelines, "c.yaml", """
        dag_id: c
        tasks:
          a: {command: "true"}
    """)
    before = {t for t in threading.enumerate() if t.name in mine}
    for _ in range(3):
        store, engine, dag, run = engine_and_run(home, pipelines, "c")
        engine.start_run(dag, run)
        assert makers()  # making the run's folders
        engine.run_until_done()
        engine.close()
        store.close()
    assert not makers()  # ended, and reaped: not even a zombie
    deadline = time.monotonic() + 10
    while {t for t in threading.enumerate() if t.name in mine} - before:
        assert time.monotonic() < deadline, "a thread outlived its engine"
        time.sleep(0.01)


def test_a_first_try_s_log_is_made_ahead_and_its_status_goes_to_the_run_s_file(
        home: Path, pipelines: Path) -> None:
    """Each task's folder and first log file are made, empty, ahead of the task (by a process
    of their own, off the path from one task's end to the next one's start); each try's shell
    appends its status to its run's one exit-status file (no file a try is created: each costs
    the kernel up to a millisecond on a busy disk); a try that never ran reads as no status;
    and a run's clean removes the folders of its tasks that never ran too."""
    from flowtui.runner import executor
    from flowtui.runner.retention import Cleaner

    made = f'{home}/logs/c/$FLOWTUI_RUN_ID/b/1.log'
    write(pipelines, "c.yaml", f"""
        dag_id: c
        tasks:
          a: {{command: 'while [ ! -e "{made}" ]; do sleep 0.01; done; exit 3'}}
          b: {{command: "true", deps: [a]}}
    """)
    store, engine, dag, run = engine_and_run(home, pipelines, "c")
    engine.start_run(dag, run)
    engine.run_until_done()
    engine.close()
    folder = home / "logs" / "c" / run.run_id
    assert sorted(p.name for p in folder.iterdir()) == [".exits", "a", "b"]
    (attempt,) = store.tries(run.pk, "a")
    assert (folder / ".exits").read_text() == f"{attempt.exit_path.rpartition('#')[2]} 3\n"
    assert sorted(p.name for p in (folder / "a").iterdir()) == ["1.log"]
    assert (folder / "b" / "1.log").read_bytes() == b""  # made ahead; b never ran
    assert executor.read_exit_status(executor.exit_path_of(str(folder), "b", 1, 1)) is None
    assert {t.task_id: t.state for t in store.task_instances(run.pk)} == \
        {"a": "failed", "b": "upstream_failed"}
    cleaned = Cleaner(store, home / "logs", time.time() + 86400).run()
    assert cleaned.runs == 1 and not folder.exists()
    store.close()


def test_a_task_may_be_named_like_the_run_s_status_file(home: Path, pipelines: Path) -> None:
    """A task id is any name of letters, digits, '_', '.', '-' not starting with '.': one
    called `exits` has its folder beside the run's status file, not in its place."""
    from flowtui.runner import executor

    write(pipelines, "c.yaml", """
        dag_id: c
        tasks:
          exits: {command: "exit 4", retries: 0}
          b: {command: "true", deps: [exits], trigger_rule: all_done}
    """)
    store, engine, dag, run = engine_and_run(home, pipelines, "c")
    engine.start_run(dag, run)
    engine.run_until_done()
    engine.close()
    assert {t.task_id: t.state for t in store.task_instances(run.pk)} == \
        {"exits": "failed", "b": "success"}
    assert sorted(executor.read_exit_status(a.exit_path) for a in store.tries(run.pk)) == [0, 4]
    store.close()
