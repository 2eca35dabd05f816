"""Soak: 150 short tasks with retries while the runner is killed with -9 ten times.

Every task writes a line when it starts and the exit code it is about to return; afterwards each
task ran exactly as many times as it has tries, every recorded exit code is the real one, and
every run and task is terminal.
"""
from __future__ import annotations

import random
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import write
from daemon_support import Runner, runs, trigger, wait_for

TASKS = 150
KILLS = 10


@pytest.mark.long(9)
@pytest.mark.soak
def test_kill9_soak_runs_every_task_exactly_as_recorded(home: Path, pipelines: Path,
                                                        tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    (home / "flowtui.toml").write_text("parallelism = 24\n")
    lines = ["dag_id: soak", "defaults: {retries: 2, retry_delay: 0}", "tasks:"]
    for number in range(TASKS):
        # One task in five fails its first try with exit 3; the rest succeed.
        fail_first = "3" if number % 5 == 0 else "0"
        code = f'$([ "$FLOWTUI_TRY_NUMBER" = 1 ] && echo {fail_first} || echo 0)'
        lines.append(
            f"  t{number:03}: {{command: 'echo \"$FLOWTUI_TASK_ID $FLOWTUI_TRY_NUMBER start\" >> "
            f"{ledger}; sleep 0.{1 + number % 4}; c={code}; "
            f"echo \"$FLOWTUI_TASK_ID $FLOWTUI_TRY_NUMBER exit $c\" >> {ledger}; exit $c'}}")
    write(pipelines, "soak.yaml", "\n".join(lines) + "\n")
    rng = random.Random(9)
    runner = Runner(home, pipelines)
    try:
        trigger(home, pipelines, "soak")
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.1, 0.6))  # a random moment in the runner's life
            runner.kill9()
            runner = Runner(home, pipelines)
        wait_for(lambda: runs(home, "soak")[0]["state"] in ("success", "failed"), 60,
                 "the soak run to end")
    finally:
        runner.stop()
    started: Counter[str] = Counter()
    exits: dict[tuple[str, int], int] = {}
    for line in ledger.read_text().splitlines():
        task_id, try_number, what, *code = line.split()
        if what == "start":
            started[task_id] += 1
        else:
            exits[(task_id, int(try_number))] = int(code[0])
    conn = sqlite3.connect(home / "flowtui.db")
    tries = conn.execute("SELECT task_id, try_number, state, exit_code, reason FROM tries").fetchall()
    states = dict(conn.execute("SELECT task_id, state FROM task_instances").fetchall())
    conn.close()
    assert len(states) == TASKS
    assert set(states.values()) == {"success"}, Counter(states.values())
    recorded = Counter(task_id for task_id, *_ in tries)
    assert recorded == started  # each task ran exactly as many times as its recorded tries
    for task_id, try_number, state, exit_code, reason in tries:
        assert state in ("success", "failed"), (task_id, try_number, state, reason)
        assert exit_code == exits[(task_id, try_number)], (task_id, try_number, reason)
    assert runs(home, "soak")[0]["state"] == "success"


@pytest.mark.long(4)
def test_a_runner_s_memory_stays_flat_over_hours_of_scheduled_runs(home: Path,
                                                                   pipelines: Path) -> None:
    """A long-lived runner keeps nothing per finished run: two minutely DAGs run for two
    and a half hours of a driven clock (real processes, real database), and the objects the
    interpreter holds after the last two hours are, kind by kind, as many as after the first
    half hour: none grew by one a run (240 runs in between)."""
    import datetime as dt
    import gc
    import signal
    import weakref

    from flowtui.runner.clock import ManualClock
    from flowtui.runner.config import load_config
    from flowtui.runner.daemon import Daemon

    for name in ("a", "b"):
        write(pipelines, f"{name}.yaml", f"""
            dag_id: minutely_{name}
            schedule: "* * * * *"
            start_date: 2026-03-02
            catchup: false
            tasks:
              extract: {{command: "echo rows=10"}}
              load: {{command: "true", deps: [extract]}}
        """)
    (home / "flowtui.toml").write_text('retention = "30m"\n')  # cleans run beside, as in use
    start = dt.datetime(2026, 3, 2, 9, 58, 30, tzinfo=dt.timezone.utc).timestamp()
    clock = ManualClock(start=start)
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)
    daemon = Daemon(load_config(home, pipelines), clock=clock)
    held: list[Counter] = []
    try:
        daemon.start()
        for minute in range(1, 151):
            clock.set(start + minute * 60 + 0.5)
            daemon.engine.fire_due()
            daemon.tick(clock.now())
            daemon.run_until_idle()
            if minute in (30, 150):
                gc.collect()
                # (Dead weak references are left out: sqlite3 keeps one per cursor made and
                # prunes them every 200 cursors, a sawtooth, not a growth.)
                held.append(Counter(type(o) for o in gc.get_objects()
                                    if not (type(o) is weakref.ref and o() is None)))
        runs = daemon.store.conn.execute("SELECT count(*), sum(state = 'success') "
                                         "FROM dag_runs").fetchone()
    finally:
        daemon.close()
        signal.signal(signal.SIGUSR1, previous)
    assert runs[0] == runs[1] and 60 <= runs[0] <= 70  # half an hour of runs kept, all done
    grown = {kind.__qualname__: n for kind, n in (held[1] - held[0]).items() if n >= 60}
    assert not grown, grown
