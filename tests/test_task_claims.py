"""Tasks offered and claimed across runners (SPEC 10), driven turn by turn: two daemons in this
process on one real PostgreSQL database (tests/pg_support.py), each with its own home, one
serving the `default` queue (it owns the runs) and one the `gpu` queue (it claims their `gpu`
tasks). The loop's steps are taken in the order a turn takes them, so each race is hit on
purpose, not by luck. The end-to-end cases (real runner processes, kill -9, SIGSTOP) are in
test_several_hosts.py."""
from __future__ import annotations

import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import flowtui, write
from daemon_support import wait_for

from flowtui.runner import executor
from flowtui.runner.clock import ManualClock
from flowtui.runner.config import load_config
from flowtui.runner.daemon import Daemon
from flowtui.runner.operator import _reset
from flowtui.store import TaskState as S


def q(url: str, sql: str, *params: Any) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


class Pair:
    """The run's owner (queue default) and a claimer (queue gpu), one clock."""

    def __init__(self, tmp: Path, pipelines: Path, gpu_pipelines: Path | None = None,
                 gpu_toml: str = "") -> None:
        self.clock = ManualClock(start=time.time())
        self.tmp = tmp
        self.owner = self._daemon("cpu", pipelines, "", frozenset({"default"}))
        self.gpu = self._daemon("gpu", gpu_pipelines or pipelines, gpu_toml,
                                frozenset({"gpu"}))

    def _daemon(self, name: str, pipelines: Path, toml: str,
                queues: frozenset[str]) -> Daemon:
        home = self.tmp / f"home-{name}"
        home.mkdir()
        (home / "flowtui.toml").write_text(toml)
        daemon = Daemon(load_config(home, pipelines), clock=self.clock, queues=queues)
        daemon.start()
        return daemon

    def drive(self, until: Callable[[], Any], what: str, seconds: float = 30,
              daemons: tuple[Daemon, ...] | None = None) -> Any:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for daemon in daemons or (self.owner, self.gpu):
                daemon.engine.turn()
            value = until()
            if value:
                return value
        raise AssertionError(f"timed out waiting for {what}")

    def close(self) -> None:
        for daemon in (self.owner, self.gpu):
            daemon.close()


@pytest.fixture
def pair_of(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FLOWTUI_DATABASE_URL", pg_url)
    made: list[Pair] = []

    def make(pipelines: Path, **kwargs: Any) -> Pair:
        made.append(Pair(tmp_path, pipelines, **kwargs))
        return made[-1]

    yield make
    for pair in made:
        pair.close()
    # a stopped runner leaves its tasks running for the next one: none comes here
    for (mark,) in q(pg_url, "SELECT exit_path FROM tries WHERE end_date IS NULL"):
        executor.kill_tree(None, mark)


def answer_lost(pair: Pair, monkeypatch: pytest.MonkeyPatch, *,
                claims_after: bool = True) -> list[int]:
    """The gpu runner's first claim commits but its answer never comes back (the store
    raises as on a dropped connection); with ``claims_after`` false it claims nothing more
    (it died). Returns a list that holds the lost claim's size once it happened."""
    offers = pair.gpu.store.offers
    real = offers.claim
    lost: list[int] = []

    def claim(*args: Any, **kwargs: Any) -> list:
        if lost and not claims_after:
            return []
        found = real(*args, **kwargs)
        if found and not lost:
            lost.append(len(found))
            raise sqlite3.OperationalError("database unavailable: server closed the "
                                           "connection unexpectedly")
        return found

    monkeypatch.setattr(offers, "claim", claim)
    return lost


def trigger(pair: Pair, dag_id: str, pipelines: Path) -> None:
    done = flowtui("trigger", dag_id, home=pair.tmp / "home-cpu", pipelines=pipelines)
    assert done.returncode == 0, done.stderr


def test_a_task_cleared_while_it_runs_elsewhere_takes_the_clear_not_its_old_end(
        pair_of: Callable[..., Pair], pg_url: str, pipelines: Path, tmp_path: Path) -> None:
    """The try's end is read once: a second look before the owner's writes are committed
    (its flush waits for the next quiet moment) must not take the ended try's row for a new
    claim and end it again with its old exit code, undoing the clear."""
    gate = tmp_path / "gate"
    write(pipelines, "train.yaml", f"""
dag_id: train
tasks:
  prep: {{command: 'true'}}
  fit: {{command: '[ "$FLOWTUI_TRY_NUMBER" = 2 ] && exit 0;
                   while [ ! -e {gate} ]; do sleep 0.05; done; exit 1', queue: gpu,
         deps: [prep]}}
""")
    pair = pair_of(pipelines)
    trigger(pair, "train", pipelines)
    pair.drive(lambda: any(t.remote for r in pair.owner.engine.runs.values()
                           for t in r.tasks.values()), "fit to run on the gpu host")
    engine = pair.owner.engine
    fit = next(iter(engine.runs.values())).tasks["fit"]
    fit.max_tries = fit.try_number + fit.spec.retries + 1  # the clear, as apply_request does
    _reset(engine, fit, S.NONE, "cleared by me", "me", pair.clock.now(), max_tries=fit.max_tries)
    engine.flush()
    gate.write_text("go")
    pair.drive(lambda: q(pg_url, "SELECT exited_at FROM tries WHERE task_id = 'fit'")[0][0],
               "the gpu host to say how try 1 ended", daemons=(pair.gpu,))
    engine.remote.follow(pair.clock.now())  # try 1 ends: the clear makes fit none, ready
    engine.launcher.launch_ready(pair.clock.now())  # offered again, not yet committed
    assert fit.state == S.QUEUED
    engine.remote.follow(pair.clock.now())  # a wake-up before the commit
    engine.flush()
    ended = q(pg_url, "SELECT try_number, new_state FROM events WHERE task_id = 'fit' AND "
                      "old_state = 'running'")
    assert ended == [(1, "none")], ended  # ended once, by the clear
    pair.drive(lambda: q(pg_url, "SELECT state FROM dag_runs") == [("success",)],
               "the cleared task to run again and the run to succeed")
    assert q(pg_url, "SELECT try_number, state FROM tries WHERE task_id = 'fit' "
                     "ORDER BY 1") == [(1, "failed"), (2, "success")]


def test_a_claimer_keeps_to_its_own_default_pool_and_leaves_tasks_its_dag_lacks(
        pair_of: Callable[..., Pair], pg_url: str, pipelines: Path, tmp_path: Path) -> None:
    """The default pool is each runner's own: `default = 1` there means one claimed task at
    a time, whatever its parallelism. And a claimer whose copy of the DAG has no such task
    (a deploy not yet everywhere) leaves it offered for one that has it; it never uses up
    the task's tries failing to start it."""
    gate = tmp_path / "gate"
    hold = f"while [ ! -e {gate} ]; do sleep 0.05; done"
    write(pipelines, "fan.yaml", f"""
dag_id: fan
tasks:
  prep: {{command: 'true'}}
  a: {{command: '{hold}', queue: gpu, deps: [prep]}}
  b: {{command: '{hold}', queue: gpu, deps: [prep]}}
  new: {{command: 'true', queue: gpu, deps: [prep], retries: 2, retry_delay: 0}}
""")
    old = tmp_path / "old-pipelines"
    write(old, "fan.yaml", f"""
dag_id: fan
tasks:
  prep: {{command: 'true'}}
  a: {{command: '{hold}', queue: gpu, deps: [prep]}}
  b: {{command: '{hold}', queue: gpu, deps: [prep]}}
""")
    pair = pair_of(pipelines, gpu_pipelines=old,
                   gpu_toml="parallelism = 8\n[pools]\ndefault = 1\n")
    trigger(pair, "fan", pipelines)
    pair.drive(lambda: pair.gpu.engine.running, "a first claim")
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        for daemon in (pair.owner, pair.gpu):
            daemon.engine.turn()
        assert len(pair.gpu.engine.running) == 1, pair.gpu.engine.slots.pool_used
    gate.write_text("go")
    pair.drive(lambda: q(pg_url, "SELECT count(*) FROM task_instances WHERE state = "
                                 "'success'")[0][0] == 3, "prep, a and b to succeed")
    assert q(pg_url, "SELECT state, try_number FROM task_instances WHERE task_id = 'new'") \
        == [("queued", 0)]  # still offered, no try used up
    assert not q(pg_url, "SELECT 1 FROM tries WHERE task_id = 'new'")


def test_a_sensor_poking_on_another_host_times_out_from_its_first_poke(
        pair_of: Callable[..., Pair], pg_url: str, pipelines: Path) -> None:
    write(pipelines, "rs.yaml", """
dag_id: rs
tasks:
  prep: {command: 'true'}
  wait:
    sensor: {command: "false"}
    mode: reschedule
    poke_interval: 0.2s
    timeout: 2s
    queue: gpu
    deps: [prep]
""")
    pair = pair_of(pipelines)
    trigger(pair, "rs", pipelines)
    pair.drive(lambda: q(pg_url, "SELECT state FROM task_instances WHERE task_id = 'wait'")
               == [("failed",)], "the sensor to time out", 20)
    first, pokes, reason = q(pg_url, "SELECT min(start_date), count(*), max(reason) FILTER "
                                     "(WHERE state = 'failed') FROM tries WHERE "
                                     "task_id = 'wait'")[0]
    assert "sensor timed out after 2s" in reason, (reason, pokes)
    recorded = q(pg_url, "SELECT first_poke_at FROM task_instances WHERE task_id = 'wait'")
    assert recorded[0][0] is not None and recorded[0][0] <= first, (recorded, first)


def test_a_claim_whose_commit_was_not_heard_back_is_run_again(
        pair_of: Callable[..., Pair], pg_url: str, pipelines: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The claim committed but its answer was lost (a connection dropped at the wrong
    moment): the claimer does not know it holds the try. At its next heartbeat it finds the
    try the store says it runs and says it lost it; the owner runs the task again at once,
    using no retry."""
    write(pipelines, "train.yaml", """
dag_id: train
tasks:
  prep: {command: 'true'}
  fit: {command: 'true', queue: gpu, deps: [prep]}
""")
    pair = pair_of(pipelines)
    lost = answer_lost(pair, monkeypatch)
    trigger(pair, "train", pipelines)
    pair.drive(lambda: lost, "the claim")
    pair.clock.advance(6)  # past a heartbeat
    pair.drive(lambda: q(pg_url, "SELECT state FROM dag_runs") == [("success",)],
               "the task to run again and the run to succeed")
    tries = q(pg_url, "SELECT try_number, state, reason FROM tries WHERE task_id = 'fit' "
                      "ORDER BY 1")
    assert [t[:2] for t in tries] == [(1, "failed"), (2, "success")], tries
    assert "lost track of it before starting it" in tries[0][2]
    assert q(pg_url, "SELECT max_tries FROM task_instances WHERE task_id = 'fit'") == [(2,)]


@pytest.mark.parametrize("log_made_ahead", [False, True])
def test_a_claim_whose_claimer_died_before_starting_it_starts_again(
        pair_of: Callable[..., Pair], pg_url: str, pipelines: Path,
        monkeypatch: pytest.MonkeyPatch, log_made_ahead: bool) -> None:
    """The claimer (on the owner's host) claimed the task and died before its process
    started. The owner finds the try never started (no process, and its shell never said it
    started), forgets it, and offers the task again, its try number back where it was. Also
    when the try's log file is there already: a runner claiming its own offer finds its first
    log made ahead with its run's folders."""
    write(pipelines, "train.yaml", """
dag_id: train
tasks:
  prep: {command: 'true'}
  fit: {command: 'true', queue: gpu, deps: [prep]}
""")
    pair = pair_of(pipelines)
    claimed = answer_lost(pair, monkeypatch, claims_after=False)
    trigger(pair, "train", pipelines)
    pair.drive(lambda: claimed, "the claim")
    if log_made_ahead:
        (log_path,), = q(pg_url, "SELECT log_path FROM tries WHERE task_id = 'fit'")
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        Path(log_path).touch()
    gone = subprocess.Popen(["true"])
    gone.wait()  # the claimer's row now names a process that no longer exists
    q(pg_url, "UPDATE runners SET pid = %s WHERE id = %s RETURNING id", gone.pid,
      pair.gpu.runner_id)
    pair.drive(lambda: q(pg_url, "SELECT state, try_number FROM task_instances WHERE "
                                 "task_id = 'fit'") == [("queued", 0)],
               "fit to be offered again", daemons=(pair.owner,))
    assert not q(pg_url, "SELECT 1 FROM tries WHERE task_id = 'fit'")  # it never happened


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return False


def test_a_stopping_claimer_says_what_its_tries_did_and_why_they_ended(
        pair_of: Callable[..., Pair], pg_url: str, pipelines: Path, tmp_path: Path) -> None:
    """A claimer stops with one try that already ended well (not yet reaped by its loop) and
    one its run's runner had asked to kill (not yet read): the first is a success, used
    once; the second fails as killed by the operator, not as cut short by the stop (which
    would run it again at once, uncounted)."""
    gate = tmp_path / "gate"
    write(pipelines, "train.yaml", f"""
dag_id: train
tasks:
  prep: {{command: 'true'}}
  quick: {{command: 'while [ ! -e {gate}.quick ]; do sleep 0.05; done', queue: gpu,
          deps: [prep]}}
  held: {{command: 'while [ ! -e {gate} ]; do sleep 0.05; done', queue: gpu, deps: [prep]}}
""")
    pair = pair_of(pipelines)
    trigger(pair, "train", pipelines)
    pair.drive(lambda: sum(1 for r in pair.owner.engine.runs.values() for t in r.tasks.values()
                           if t.remote) == 2, "both tasks to run on the gpu host")
    owner = pair.owner.engine
    held = next(iter(owner.runs.values())).tasks["held"]
    owner.lifecycle.kill(held, "killed by me", pair.clock.now())  # as apply_request does
    owner.flush()
    quick = next(t for t in pair.gpu.engine.running.values() if t.task_id == "quick")
    (tmp_path / "gate.quick").write_text("go")
    wait_for(lambda: _zombie(quick.pid), 10, "quick to end, unreaped")
    pair.gpu.engine.request_stop()
    pair.gpu.engine.run_forever()  # its stop
    pair.drive(lambda: q(pg_url, "SELECT state FROM dag_runs") == [("failed",)],
               "the owner to end the run", daemons=(pair.owner,))
    assert q(pg_url, "SELECT task_id, try_number, state, reason FROM tries WHERE task_id <> "
                     "'prep' ORDER BY 1") == [("held", 1, "failed", "killed by me"),
                                              ("quick", 1, "success", "")]
    assert dict(q(pg_url, "SELECT task_id, state FROM task_instances")) == {
        "prep": "success", "quick": "success", "held": "failed"}
