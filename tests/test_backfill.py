"""Backfills through the real CLI: throttling, order, reprocess, preview, cancel, pause."""
from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import flowtui, write
from daemon_support import Runner, alive, wait_for

from flowtui.runner import backfill as bf
from flowtui.runner.clock import iso
from flowtui.runner.loader import load_folder
from flowtui.store import RunState, Store
from flowtui.store.changes import Changes

DAILY = """
dag_id: daily
schedule: "@daily"
timezone: Europe/Berlin
start_date: 2026-01-01
end_date: 2026-06-01
tasks:
  report: {command: 'echo {{ ds }} $FLOWTUI_DS; sleep 0.15'}
  publish: {command: 'true', deps: [report]}
"""


def rows(home: Path, sql: str, *params: object) -> list[tuple]:
    conn = sqlite3.connect(home / "flowtui.db")
    out = conn.execute(sql, params).fetchall()
    conn.close()
    return out


def peak_overlap(spans: list[tuple[float, float]]) -> int:
    points = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    level = best = 0
    for _, delta in points:
        level += delta
        best = max(best, level)
    return best


def test_thirty_days_at_parallelism_three(home: Path, pipelines: Path) -> None:
    write(pipelines, "daily.yaml", DAILY)
    result = flowtui("backfill", "daily", "--start", "2026-03-01", "--end", "2026-03-30",
                     "--parallelism", "3", "--wait", home=home, pipelines=pipelines, timeout=180)
    assert result.returncode == 0, result.stderr
    runs = rows(home, "SELECT run_id, logical_date, start_date, end_date, state, run_type "
                      "FROM dag_runs WHERE dag_id = 'daily' ORDER BY logical_date")
    assert len(runs) == 30
    assert all(r[4] == "success" and r[5] == "backfill" for r in runs)
    assert peak_overlap([(r[2], r[3]) for r in runs]) <= 3
    assert peak_overlap([(r[2], r[3]) for r in runs]) >= 2  # it did run in parallel
    # Logical dates are midnight in Berlin, one a day, and {{ ds }} is that day.
    expected = [f"2026-03-{d:02d}" for d in range(1, 31)]
    assert [r[0][10:20] for r in runs] != []  # run ids carry the ISO logical date
    logs = []
    for run_id, *_ in runs:
        log = home / "logs" / "daily" / run_id / "report" / "1.log"
        logs.append(log.read_text().split())
    assert [entry[0] for entry in logs] == expected
    assert all(entry[0] == entry[1] for entry in logs)


def test_newest_first(home: Path, pipelines: Path) -> None:
    write(pipelines, "daily.yaml", DAILY)
    result = flowtui("backfill", "daily", "--start", "2026-03-01", "--end", "2026-03-04",
                     "--order", "newest-first", "--wait", home=home, pipelines=pipelines)
    assert result.returncode == 0, result.stderr
    by_start = rows(home, "SELECT logical_date FROM dag_runs ORDER BY start_date")
    dates = [r[0] for r in by_start]
    assert dates == sorted(dates, reverse=True)


def test_reprocess_choices(home: Path, pipelines: Path, tmp_path: Path) -> None:
    flag = tmp_path / "fixed"
    write(pipelines, "daily.yaml", f"""
        dag_id: daily
        schedule: "@daily"
        start_date: 2026-01-01
        tasks:
          t:
            command: 'case {{{{ ds }}}} in *-0[246]) [ -e {flag} ] || exit 1;; esac'
    """)
    args = ["backfill", "daily", "--start", "2026-03-01", "--end", "2026-03-06", "--wait"]
    first = flowtui(*args, home=home, pipelines=pipelines)
    assert first.returncode == 1  # three dates failed
    states = dict(rows(home, "SELECT substr(run_id, 11, 10), state FROM dag_runs"))
    assert sorted(d for d, s in states.items() if s == "failed") == [
        "2026-03-02", "2026-03-04", "2026-03-06"]
    flag.write_text("ok")

    def plan(reprocess: str) -> dict:
        out = flowtui(*args[:-1], "--dry-run", "--json", "--reprocess", reprocess, home=home,
                      pipelines=pipelines)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    assert len(plan("none")["create"]) == 0 and len(plan("none")["skip"]) == 6
    assert [c["logical_date"][:10] for c in plan("failed")["create"]] == [
        "2026-03-02", "2026-03-04", "2026-03-06"]
    assert len(plan("completed")["create"]) == 6
    again = flowtui(*args, "--reprocess", "failed", home=home, pipelines=pipelines)
    assert again.returncode == 0, again.stderr
    assert rows(home, "SELECT count(*) FROM dag_runs")[0][0] == 9
    latest = rows(home, "SELECT substr(run_id, 11, 10), state FROM dag_runs ORDER BY id")
    final: dict[str, str] = {}
    for day, state in latest:
        final[day] = state
    assert set(final.values()) == {"success"}


def test_dry_run_changes_nothing(home: Path, pipelines: Path) -> None:
    write(pipelines, "daily.yaml", DAILY)
    assert flowtui("backfill", "daily", "--start", "2026-03-01", "--end", "2026-03-02",
                   "--wait", home=home, pipelines=pipelines).returncode == 0

    def snapshot() -> list:
        return [rows(home, f"SELECT * FROM {table} ORDER BY 1") for table in
                ("dag_runs", "task_instances", "tries", "events", "audit_log", "backfills")]

    before = snapshot()
    out = flowtui("backfill", "daily", "--start", "2026-02-20", "--end", "2026-03-05",
                  "--dry-run", home=home, pipelines=pipelines)
    assert out.returncode == 0
    assert "would create 12 run(s) and skip 2" in out.stdout
    assert "already has a success run" in out.stdout
    assert snapshot() == before


def test_cancel_kills_running_trees_and_keeps_finished_runs(home: Path, pipelines: Path) -> None:
    write(pipelines, "slow.yaml", """
        dag_id: slow
        schedule: "@daily"
        start_date: 2026-01-01
        end_date: 2026-06-01
        tasks:
          t: {command: 'case {{ ds }} in *-01) true;; *) sleep 60 & wait;; esac'}
    """)
    runner = Runner(home, pipelines)
    try:
        out = flowtui("backfill", "slow", "--start", "2026-03-01", "--end", "2026-03-05",
                      "--parallelism", "2", home=home, pipelines=pipelines)
        assert out.returncode == 0, out.stderr
        backfill_id = rows(home, "SELECT max(id) FROM backfills")[0][0]
        wait_for(lambda: rows(home, "SELECT count(*) FROM dag_runs WHERE state = 'success'")[0][0]
                 == 1 and rows(home, "SELECT count(*) FROM task_instances WHERE state = "
                               "'running'")[0][0] == 2, what="two running runs")
        pids = [r[0] for r in rows(home, "SELECT pid FROM task_instances WHERE state = 'running'")]
        cancel = flowtui("backfill", "cancel", str(backfill_id), home=home, pipelines=pipelines)
        assert cancel.returncode == 0, cancel.stderr
        wait_for(lambda: rows(home, "SELECT count(*) FROM dag_runs WHERE state = 'running'")[0][0]
                 == 0, what="the running runs to stop")
        wait_for(lambda: not any(alive(p) for p in pids), 15, "the task trees to end")
        states = sorted(r[0] for r in rows(home, "SELECT state FROM dag_runs"))
        assert states == ["failed", "failed", "success"]  # queued ones are gone
        listed = json.loads(flowtui("backfill", "list", "--json", home=home).stdout)
        assert listed[0]["state"] == "cancelled"
    finally:
        runner.stop()


def test_pause_and_resume_across_a_runner_restart(home: Path, pipelines: Path) -> None:
    write(pipelines, "daily.yaml", DAILY.replace("sleep 0.15", "sleep 0.4"))
    runner = Runner(home, pipelines)
    try:
        assert flowtui("backfill", "daily", "--start", "2026-03-01", "--end", "2026-03-06",
                       home=home, pipelines=pipelines).returncode == 0
        wait_for(lambda: rows(home, "SELECT count(*) FROM dag_runs WHERE state = 'success'")[0][0]
                 >= 1, what="a first run")
        assert flowtui("backfill", "pause", "1", home=home).returncode == 0
        runner.kill9()
        runner = Runner(home, pipelines)
        wait_for(lambda: rows(home, "SELECT count(*) FROM dag_runs WHERE state = 'running'")[0][0]
                 == 0, what="the run in flight to finish")
        done = rows(home, "SELECT count(*) FROM dag_runs WHERE state = 'success'")[0][0]
        time.sleep(1.0)  # paused: nothing new may start in this second
        assert rows(home, "SELECT count(*) FROM dag_runs WHERE state != 'queued'")[0][0] == done
        assert done < 6
        assert flowtui("backfill", "resume", "1", home=home).returncode == 0
        wait_for(lambda: rows(home, "SELECT count(*) FROM dag_runs WHERE state = 'success'")[0][0]
                 == 6, 30, "all six runs")
        listed = json.loads(flowtui("backfill", "list", "--json", home=home).stdout)
        assert listed[0]["state"] == "done" and listed[0]["progress"]["done"] == 6
    finally:
        runner.stop()


@pytest.mark.parametrize(("day", "count"), [("2026-03-29", 23), ("2026-10-25", 24)])
def test_hourly_across_dst(home: Path, pipelines: Path, day: str, count: int) -> None:
    write(pipelines, "hourly.yaml", """
        dag_id: hourly
        schedule: "0 * * * *"
        timezone: Europe/Berlin
        start_date: 2026-01-01
        tasks:
          t: {command: 'true'}
    """)
    out = flowtui("backfill", "hourly", "--start", day, "--end", day, "--dry-run", "--json",
                  home=home, pipelines=pipelines)
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)["create"]
    assert len(created) == count  # every wall-clock hour of the day once
    starts = [c["logical_date"] for c in created]
    assert len(set(starts)) == count
    assert [c["data_interval_end"] for c in created][:-1] == starts[1:]


def test_bad_backfill_input(home: Path, pipelines: Path) -> None:
    write(pipelines, "daily.yaml", DAILY)
    write(pipelines, "manual.yaml", "dag_id: manual\ntasks:\n  t: {command: 'true'}\n")
    write(pipelines, "minutely.yaml", "dag_id: minutely\nschedule: '* * * * *'\n"
                                      "tasks:\n  t: {command: 'true'}\n")
    cases = [
        (["daily", "--start", "2026-03-05", "--end", "2026-03-01"], "after --end"),
        (["nope", "--start", "2026-03-01", "--end", "2026-03-02"], "unknown DAG"),
        (["manual", "--start", "2026-03-01", "--end", "2026-03-02"], "has no schedule"),
        (["daily", "--start", "March 1", "--end", "2026-03-02"], "is not a date"),
        (["daily", "--start", "2026-02-30", "--end", "2026-03-02"], "is not a date"),
        (["minutely", "--start", "2026-03-01", "--end", "2026-03-08"], "--yes"),
    ]
    for args, words in cases:
        result = flowtui("backfill", *args, home=home, pipelines=pipelines)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert result.stderr.count("\n") == 1 and words in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_a_backfill_pool_keeps_its_tasks_apart(home: Path, pipelines: Path) -> None:
    (home / "flowtui.toml").write_text("[pools]\nbackfills = 1\n")
    write(pipelines, "daily.yaml", DAILY)
    result = flowtui("backfill", "daily", "--start", "2026-03-01", "--end", "2026-03-04",
                     "--parallelism", "3", "--pool", "backfills", "--wait", home=home,
                     pipelines=pipelines, timeout=120)
    assert result.returncode == 0, result.stderr
    assert {r[0] for r in rows(home, "SELECT pool FROM task_instances")} == {"backfills"}
    spans = rows(home, "SELECT start_date, end_date FROM tries")
    assert peak_overlap(spans) == 1  # the pool's one slot, whatever the run parallelism
    unknown = flowtui("backfill", "daily", "--start", "2026-03-05", "--end", "2026-03-06",
                      "--pool", "nope", home=home, pipelines=pipelines)
    assert unknown.returncode == 2 and "pool 'nope' is not defined" in unknown.stderr


def test_a_backfill_is_written_at_the_stores_clock_with_who_and_why(home: Path,
                                                                   pipelines: Path) -> None:
    """In-process on a real store with a driven clock: the runs come from the store's one
    run-creation path (a taken run id gets a suffix), every event says cause and actor, and a
    cancel drops queued runs and asks the owner of each running one to end it."""
    write(pipelines, "daily.yaml", DAILY)
    dag = load_folder(pipelines).dags["daily"]
    clock = [1_900_000_000.0]
    store = Store.open(home / "flowtui.db", now=lambda: clock[0])
    march = bf.intervals_in_range(dag, dt.date(2026, 3, 1), dt.date(2026, 3, 3))
    tasks = [(t.task_id, t.max_tries, t.pool, t.pool_slots, 0) for t in dag.tasks.values()]
    store.create_run(dag_id="daily", run_id=f"backfill__{iso(march[1].start)}",
                     run_type="manual", logical_date=1.0, data_interval_start=1.0,
                     data_interval_end=2.0, conf={}, state=RunState.QUEUED, runner_id=None,
                     tasks=tasks, cause="operator", actor="ann")
    backfill_id, plan = bf.queue_backfill(store, dag, "2026-03-01", "2026-03-03", reprocess=None,
                                          order="oldest-first", parallelism=2, pool=None,
                                          user="ann")
    assert backfill_id == 1 and len(plan.create) == 3 and not plan.skip
    made = rows(home, "SELECT run_id, state, created_at FROM dag_runs WHERE backfill_id = 1 "
                      "ORDER BY logical_date")
    assert [r[0] for r in made] == [f"backfill__{iso(march[0].start)}",
                                    f"backfill__{iso(march[1].start)}.2",
                                    f"backfill__{iso(march[2].start)}"]
    assert {(r[1], r[2]) for r in made} == {("queued", clock[0])}
    assert rows(home, "SELECT count(*) FROM task_instances t JOIN dag_runs r ON r.id = t.run_pk "
                      "WHERE r.backfill_id = 1 AND t.state = 'none'") == [(6,)]
    assert bf.get_backfill(store, 1).created_at == clock[0]
    with pytest.raises(bf.BackfillError, match="overlap backfill 1"):
        bf.queue_backfill(store, dag, "2026-03-02", "2026-03-04", reprocess=None,
                          order="oldest-first", parallelism=1, pool=None, user="ann")

    first = store.backfills.runs_in(1, RunState.QUEUED, limit=1)[0]
    start = Changes()
    start.move_run(first.pk, "daily", first.run_id, RunState.QUEUED, RunState.RUNNING,
                   at=clock[0], cause="scheduler", actor="runner 7")
    store.apply(start)
    clock[0] += 60
    change = bf.change_state(store, 1, "cancel", user="bob")
    assert (change.state, change.stopping) == ("cancelled", 1)
    assert rows(home, "SELECT id FROM dag_runs WHERE backfill_id = 1") == [(first.pk,)]
    assert rows(home, "SELECT at, user, action, run_pk FROM requests") == [
        (clock[0], "bob", "cancel_run", first.pk)]
    assert bf.get_backfill(store, 1).updated_at == clock[0]
    with pytest.raises(bf.BackfillError, match="is cancelled"):
        bf.change_state(store, 1, "resume", user="bob")
    events = rows(home, "SELECT kind, old_state, new_state, cause, actor, detail, at FROM events "
                        "WHERE detail = 'backfill 1' ORDER BY id")
    created = clock[0] - 60
    assert events == [("run", None, "queued", "operator", "ann", "backfill 1", created)] * 3 + [
        ("backfill", None, "running", "operator", "ann", "backfill 1", created),
        ("backfill", "running", "cancelled", "operator", "bob", "backfill 1", clock[0])]
    assert [r[0] for r in rows(home, "SELECT action FROM audit_log ORDER BY id")] == [
        "backfill", "backfill_cancel"]

    # A backfill whose runs all ended is done once, with the scheduler's event.
    second, _ = bf.queue_backfill(store, dag, "2026-03-10", "2026-03-11", reprocess=None,
                                  order="newest-first", parallelism=1, pool=None, user="ann")
    assert second == 2
    runs = bf.next_runs(store, bf.get_backfill(store, 2), 5)
    assert [r.logical_date for r in runs] == sorted((r.logical_date for r in runs), reverse=True)
    bf.finish_if_done(store, 2)
    assert bf.get_backfill(store, 2).state == "running"  # runs still queued
    ended = Changes()
    for run in runs:
        ended.move_run(run.pk, "daily", run.run_id, RunState.QUEUED, RunState.SUCCESS,
                       at=clock[0], cause="scheduler", actor="runner 7")
    store.apply(ended)
    clock[0] += 5
    bf.finish_if_done(store, 2, actor="runner 7")
    bf.finish_if_done(store, 2, actor="runner 7")
    assert bf.progress(store, bf.get_backfill(store, 2)) == {
        "done": 2, "running": 0, "failed": 0, "left": 0, "skipped": 0}
    assert rows(home, "SELECT old_state, new_state, cause, actor, at FROM events WHERE "
                      "kind = 'backfill' AND detail = 'backfill 2' ORDER BY id") == [
        (None, "running", "operator", "ann", clock[0] - 5),
        ("running", "done", "scheduler", "runner 7", clock[0])]
    store.close()
