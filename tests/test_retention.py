"""Retention: `flowtui db clean` and the runner's daily clean remove exactly the old finished runs,
with their tries, events and log files; running and recent runs, and the audit log, stay. Real
runs (real processes, a real SQLite file) recorded on a driven clock, so "200 days ago" is real
history, not rows written by hand."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from app_support import run_async, screen_text, until
from conftest import flowtui, write

from flowtui.runner.clock import ManualClock
from flowtui.runner.config import load_config
from flowtui.runner.daemon import Daemon
from flowtui.runner.loader import load_folder, record_load
from flowtui.runner.runs import run_in_foreground
from flowtui.store import RunState, Store

DAY = 86400.0
ETL = """
dag_id: etl
tasks:
  extract: {command: 'echo extracted $FLOWTUI_RUN_ID'}
  load: {command: 'echo loaded; [ "$FLOWTUI_TASK_ID" = load ]', deps: [extract]}
"""


def record_runs(home: Path, pipelines: Path, ages_in_days: list[float]) -> None:
    """One real run of `etl` as it happened that many days ago (the store's and the engine's
    clock set then), plus a run left `running` 300 days ago by a runner that died."""
    config = load_config(home, pipelines)
    result = load_folder(pipelines)
    now = time.time()
    for age in ages_in_days:
        clock = ManualClock(start=now - age * DAY)
        store = Store.open(config.database, now=clock.now)
        record_load(store, result)
        run = run_in_foreground(store, config, result.dags["etl"], logical_date=None, conf={},
                                handle_signals=False, clock=clock)
        assert run.state == "success"
        store.close()
    clock = ManualClock(start=now - 300 * DAY)
    store = Store.open(config.database, now=clock.now)
    store.create_run(dag_id="etl", run_id="stuck", run_type="manual", logical_date=clock.now(),
                     data_interval_start=clock.now(), data_interval_end=clock.now(), conf={},
                     state="running", runner_id=None, tasks=[("extract", 1, "default", 1, 1)])
    store.close()


def table(home: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(home / "flowtui.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture
def aged(home: Path, pipelines: Path) -> tuple[Path, Path]:
    write(pipelines, "etl.yaml", ETL)
    record_runs(home, pipelines, [200, 120, 95, 10, 1])
    assert flowtui("trigger", "etl", home=home, pipelines=pipelines).returncode == 0  # queued
    return home, pipelines


def log_files(home: Path) -> set[str]:
    return {str(p.relative_to(home / "logs")) for p in (home / "logs").rglob("*") if p.is_file()}


def test_dry_run_lists_the_old_finished_runs_and_removes_nothing(aged) -> None:
    home, pipelines = aged
    before = (table(home, "SELECT count(*) FROM dag_runs"), log_files(home))
    done = flowtui("db", "clean", "--older-than", "90d", "--dry-run", "--json", home=home,
                   pipelines=pipelines)
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert len(listed["runs"]) == 3 and {r["state"] for r in listed["runs"]} == {"success"}
    assert listed["tries"] == 6 and listed["events"] >= 3 * (2 * 2 + 2)
    assert (table(home, "SELECT count(*) FROM dag_runs"), log_files(home)) == before
    text = flowtui("db", "clean", "--older-than", "90d", "--dry-run", home=home,
                   pipelines=pipelines).stdout
    assert "would remove 3 runs, 6 tries" in text and "nothing removed" in text
    assert "stuck" not in text


def test_clean_removes_exactly_the_old_finished_runs_with_their_logs(aged) -> None:
    home, pipelines = aged
    runs = table(home, "SELECT run_id, state, end_date FROM dag_runs ORDER BY id")
    old = {r[0] for r in runs if r[1] == "success" and r[2] < time.time() - 90 * DAY}
    kept = {r[0] for r in runs} - old
    assert len(old) == 3 and len(kept) == 4  # two recent, the stuck one, the queued one
    old_logs = {f for f in log_files(home) if f.split("/")[1] in old}
    assert len(old_logs) == 9  # a log for each of 6 tries, each run's exit-status file
    audit_before = table(home, "SELECT count(*) FROM audit_log")[0][0]
    done = flowtui("db", "clean", "--older-than", "90d", home=home, pipelines=pipelines)
    assert done.returncode == 0, done.stderr
    assert "removed 3 finished runs" in done.stdout and "6 tries" in done.stdout
    assert {r[0] for r in table(home, "SELECT run_id FROM dag_runs")} == kept
    assert not log_files(home) & old_logs
    assert {f.split("/")[1] for f in log_files(home)} == kept - {"stuck"} - {
        r[0] for r in table(home, "SELECT run_id FROM dag_runs WHERE state = 'queued'")}
    assert not (home / "logs" / "etl" / sorted(old)[0]).exists()  # emptied folders go too
    # Nothing of the removed runs is left behind: tries, task instances, events.
    assert table(home, "SELECT count(*) FROM tries WHERE run_pk NOT IN "
                       "(SELECT id FROM dag_runs)") == [(0,)]
    assert table(home, "SELECT count(*) FROM task_instances WHERE run_pk NOT IN "
                       "(SELECT id FROM dag_runs)") == [(0,)]
    assert table(home, "SELECT count(*) FROM events WHERE run_id NOT IN "
                       "(SELECT run_id FROM dag_runs) AND kind != 'retention'") == [(0,)]
    assert table(home, "SELECT kind, actor FROM events ORDER BY id DESC LIMIT 1")[0][0] == \
        "retention"  # the removal moves the change counter readers follow
    # The audit log is kept, and the clean itself is in it.
    entries = table(home, "SELECT action, detail FROM audit_log ORDER BY id")
    assert len(entries) == audit_before + 1 and entries[-1][0] == "db clean"
    assert json.loads(entries[-1][1])["runs"] == 3
    # Again: nothing left to remove.
    again = flowtui("db", "clean", "--older-than", "90d", "--json", home=home,
                    pipelines=pipelines)
    assert json.loads(again.stdout)["runs"] == 0


def test_the_audit_log_goes_only_when_asked(aged) -> None:
    home, pipelines = aged
    conn = sqlite3.connect(home / "flowtui.db")
    conn.execute("UPDATE audit_log SET at = at - 100 * 86400")  # the trigger, 100 days back
    conn.commit()
    conn.close()
    flowtui("db", "clean", "--older-than", "90d", home=home, pipelines=pipelines)
    assert table(home, "SELECT count(*) FROM audit_log WHERE action = 'trigger'") == [(1,)]
    done = flowtui("db", "clean", "--older-than", "90d", "--audit", home=home,
                   pipelines=pipelines)
    assert "audit entries" in done.stdout
    assert table(home, "SELECT count(*) FROM audit_log WHERE action = 'trigger'") == [(0,)]


@pytest.mark.parametrize("age", ["30s", "0", "ninety days", "-5d", "90"])
def test_a_bad_age_is_one_line(home: Path, pipelines: Path, age: str) -> None:
    write(pipelines, "etl.yaml", ETL)
    assert flowtui("run", "etl", home=home, pipelines=pipelines).returncode == 0
    done = flowtui("db", "clean", f"--older-than={age}", home=home, pipelines=pipelines)
    assert done.returncode == 2
    assert done.stderr.startswith("flowtui: error: --older-than") and done.stderr.count("\n") == 1
    assert table(home, "SELECT count(*) FROM dag_runs") == [(1,)]


def test_the_tui_open_beside_a_clean_keeps_working(aged) -> None:
    from flowtui.app.app import make_app

    home, pipelines = aged

    async def go() -> None:
        app = make_app(load_config(home, pipelines), start_mode="runs", refresh_seconds=0.2)
        async with app.run_test(size=(120, 30)) as pilot:
            await until(pilot, lambda: app.screen.table.row_count == 7, what="seven runs")
            done = flowtui("db", "clean", "--older-than", "90d", home=home, pipelines=pipelines)
            assert done.returncode == 0, done.stderr
            await until(pilot, lambda: app.screen.table.row_count == 4, what="four runs left")
            assert app.read_problem is None
            await pilot.press("1")  # other screens read the cleaned store too
            await until(pilot, lambda: "etl" in screen_text(app), what="the DAGs screen")
            assert app.read_problem is None

    run_async(go())


def test_the_runner_cleans_once_a_day_in_batches_when_retention_is_set(
        home: Path, pipelines: Path) -> None:
    write(pipelines, "etl.yaml", ETL)
    record_runs(home, pipelines, [40, 35, 31, 5])
    (home / "flowtui.toml").write_text('retention = "30d"\n')
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)
    clock = ManualClock(start=time.time())
    daemon = Daemon(load_config(home, pipelines), clock=clock)
    try:
        daemon.start()
        daemon.run_until_idle()
        assert len(table(home, "SELECT id FROM dag_runs")) == 5  # not before its first minute
        deadline = clock.now() + 120
        while daemon.retention.last is None and clock.now() < deadline:
            clock.advance(1.0)
            daemon.engine.fire_due()
        assert daemon.retention.last is not None and daemon.retention.last.runs == 3
        assert daemon.retention.last.longest_batch < 0.05
        assert sorted(r[0] for r in table(home, "SELECT run_id FROM dag_runs")) == sorted(
            ["stuck", *[r[0] for r in table(home, "SELECT run_id FROM dag_runs "
                                                  "WHERE run_id != 'stuck'")]])
        assert len(table(home, "SELECT id FROM dag_runs")) == 2  # 5 days old, and stuck
        # The next clean is a day later: a run that ages past the cutoff meanwhile waits for it.
        clock.advance(26 * DAY)
        daemon.engine.fire_due()
        deadline = clock.now() + 60
        while len(table(home, "SELECT id FROM dag_runs")) > 1 and clock.now() < deadline:
            clock.advance(1.0)
            daemon.engine.fire_due()
        assert [r[0] for r in table(home, "SELECT run_id FROM dag_runs")] == ["stuck"]
    finally:
        daemon.close()
        signal.signal(signal.SIGUSR1, previous)


def _age(folder: Path, days: float) -> None:
    """Every file and folder under ``folder`` as last written ``days`` ago."""
    stamp = time.time() - days * DAY
    for path in [*folder.rglob("*"), folder]:
        os.utime(path, (stamp, stamp), follow_symlinks=False)


def test_each_host_s_clean_removes_its_logs_of_runs_another_host_s_clean_removed(
        pg_url: str, tmp_path: Path, pipelines: Path) -> None:
    """SPEC 10: each host keeps its own tries' logs, which the host whose clean removes a run
    cannot reach. A clean records the runs it removes; every host's clean (`db clean`, or its
    runner's retention) then removes its own log folders of those runs. Never a folder of a run
    the database merely does not know (another home's, one from before a move), nor one
    written in since the cutoff, nor one whose name cannot be a run's."""
    write(pipelines, "etl.yaml", ETL)
    here, there = tmp_path / "host-a", tmp_path / "host-b"
    here.mkdir()
    there.mkdir()
    record_runs(there, pipelines, [200, 120, 1])  # run on host b, 200, 120 and 1 day ago
    logs = there / "logs" / "etl"
    oldest, middle, recent = (logs / name for name in sorted(p.name for p in logs.iterdir()))
    for folder, age in ((oldest, 200), (middle, 120), (recent, 1)):
        _age(folder, age)
    (middle / "extract" / "notes.txt").write_text("written today\n")  # touched since
    unknown = logs / "manual__1999-01-01T00:00:00+00:00"  # never in this database
    (unknown / "extract").mkdir(parents=True)
    (unknown / "extract" / "1.log").write_text("another home's\n")
    _age(unknown, 9000)
    odd = logs / os.fsdecode(b"run-\xff")  # a name no run id has
    odd.mkdir()
    _age(odd, 9000)
    (there / "logs").rename(there / "away")  # host a's clean cannot reach host b's files
    try:
        done = flowtui("db", "clean", "--older-than", "90d", "--json", home=here,
                       pipelines=pipelines)
    finally:
        (there / "away").rename(there / "logs")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["runs"] == 2
    assert oldest.exists() and middle.exists()  # still on host b

    dry = flowtui("db", "clean", "--older-than", "90d", "--dry-run", "--json", home=there,
                  pipelines=pipelines)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["removed_runs_log_folders_to_remove"] == [str(oldest),
                                                                             str(middle)]
    assert oldest.exists()
    done = flowtui("db", "clean", "--older-than", "90d", "--json", home=there,
                   pipelines=pipelines)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["runs"], report["removed_runs_log_folders"],
            report["removed_runs_log_files"]) == (0, 1, 3), report  # 2 logs, 1 status file
    assert not oldest.exists()
    assert (middle / "extract" / "notes.txt").exists()  # touched since: put back as it was
    assert recent.exists() and unknown.exists() and odd.exists()
    assert not [p for p in logs.iterdir() if p.name.startswith(".removing")]


def test_a_short_retention_is_cleaned_every_tenth_of_it_not_once_a_day(
        home: Path, pipelines: Path) -> None:
    """With `retention = "10m"` a run is gone within a minute of turning ten minutes old: a
    daily clean would let the home hold a day of runs it was told to keep ten minutes."""
    write(pipelines, "etl.yaml", ETL)
    minute = 60.0 / DAY
    record_runs(home, pipelines, [20 * minute, 5 * minute])
    (home / "flowtui.toml").write_text('retention = "10m"\n')
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)
    clock = ManualClock(start=time.time())
    started = clock.now()
    daemon = Daemon(load_config(home, pipelines), clock=clock)

    def runs() -> set[str]:
        return {r[0] for r in table(home, "SELECT run_id FROM dag_runs WHERE run_id != 'stuck'")}

    try:
        daemon.start()
        daemon.run_until_idle()
        young = max(runs(), key=lambda run_id: table(
            home, f"SELECT end_date FROM dag_runs WHERE run_id = '{run_id}'")[0][0])
        while runs() != {young} and clock.now() < started + 120:
            clock.advance(1.0)
            daemon.engine.fire_due()
        assert runs() == {young}  # the first clean, a minute after start
        while runs() and clock.now() < started + 20 * 60:
            clock.advance(1.0)
            daemon.engine.fire_due()
        # It turned ten minutes old 5 minutes after start; the cleans come a minute apart.
        assert not runs() and clock.now() <= started + 7 * 60, clock.now() - started
    finally:
        daemon.close()
        signal.signal(signal.SIGUSR1, previous)


def test_a_bad_retention_in_flowtui_toml_is_one_line(home: Path, pipelines: Path) -> None:
    write(pipelines, "etl.yaml", ETL)
    home.mkdir(parents=True, exist_ok=True)
    (home / "flowtui.toml").write_text('retention = "soon"\n')
    done = flowtui("dags", "list", home=home, pipelines=pipelines)
    assert done.returncode == 2
    assert "retention" in done.stderr and done.stderr.count("\n") == 1


def test_a_dags_newest_scheduled_run_stays_so_its_schedule_carries_on(home: Path,
                                                                    pipelines: Path) -> None:
    """Without it a runner would schedule the DAG's history again (catch-up from start_date)."""
    write(pipelines, "etl.yaml", ETL)
    config = load_config(home, pipelines)
    clock = ManualClock(start=time.time() - 400 * DAY)
    store = Store.open(config.db_path, now=clock.now)
    record_load(store, load_folder(pipelines))
    for days_ago in (400, 399):
        day = time.time() - days_ago * DAY
        store.create_run(dag_id="etl", run_id=f"scheduled__{days_ago}", run_type="scheduled",
                         logical_date=day, data_interval_start=day,
                         data_interval_end=day + DAY, conf={}, state="success", runner_id=None,
                         tasks=[("extract", 1, "default", 1, 1)])
    conn = store.conn
    conn.execute("UPDATE dag_runs SET end_date = ?", (clock.now() + 60,))
    before = store.last_scheduled("etl")
    store.close()
    done = flowtui("db", "clean", "--older-than", "90d", home=home, pipelines=pipelines)
    assert "removed 1 finished runs" in done.stdout
    assert [r[0] for r in table(home, "SELECT run_id FROM dag_runs")] == ["scheduled__399"]
    store = Store.open(config.db_path)
    assert store.last_scheduled("etl") == before
    store.close()


def test_a_run_an_open_alert_names_stays_and_resolved_alerts_go_with_their_runs(aged) -> None:
    home, pipelines = aged
    old = [r[0] for r in table(home, "SELECT run_id FROM dag_runs WHERE state = 'success' "
                                     "ORDER BY logical_date LIMIT 2")]
    store = Store.open(home / "flowtui.db")
    try:
        now = store.now()
        store.alerts.insert("task_failed", "etl", old[0], "load", "error", "still open", now)
        done_id = store.alerts.insert("task_failed", "etl", old[1], "load", "error", "over", now)
        store.alerts.resolve(done_id, now)
    finally:
        store.close()
    done = flowtui("db", "clean", "--older-than", "90d", "--json", home=home,
                   pipelines=pipelines)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["runs"] == 2 and json.loads(done.stdout)["alerts"] == 1
    kept = {r[0] for r in table(home, "SELECT run_id FROM dag_runs")}
    assert old[0] in kept and old[1] not in kept  # the open alert's run is still there to open
    assert table(home, "SELECT run_id, state FROM alerts") == [(old[0], "open")]


def test_old_dataset_events_go_and_nothing_old_looks_new_to_a_consumer(
        home: Path, pipelines: Path) -> None:
    write(pipelines, "report.yaml", """
        dag_id: report
        schedule: {datasets: [warehouse.orders]}
        tasks:
          build: {command: 'true'}
    """)
    config = load_config(home, pipelines)
    now = time.time()
    for days_ago in (200, 120, 100, 10):
        clock = ManualClock(start=now - days_ago * DAY)
        store = Store.open(config.db_path, now=clock.now)
        try:
            record_load(store, load_folder(pipelines))
            store.datasets.emit("warehouse.orders", f"p{days_ago}", {}, "loader")
            found = store.datasets.readiness("report", ["warehouse.orders"], "same_partition")
            for partition, events in found.ready.items():  # what the runner does, then
                store.datasets.create_consumer_run(
                    "report", "same_partition", partition, events,
                    run_id=f"dataset__{partition}", run_type="dataset", logical_date=clock.now(),
                    data_interval_start=clock.now(), data_interval_end=clock.now(), conf={},
                    state=RunState.QUEUED, runner_id=None, backfill_id=None, tasks=[], cause="dataset",
                    actor="runner")
        finally:
            store.close()
    store = Store.open(config.db_path, now=lambda: now - 150 * DAY)  # the newest, 200 days on
    try:
        store.datasets.emit("warehouse.customers", "p200", {}, "loader")
    finally:
        store.close()
    dry = json.loads(flowtui("db", "clean", "--older-than", "90d", "--dry-run", "--json",
                             home=home, pipelines=pipelines).stdout)
    assert dry["dataset_events"] == 3  # p200, p120, p100 of orders; customers' only event stays
    done = flowtui("db", "clean", "--older-than", "90d", "--json", home=home, pipelines=pipelines)
    assert json.loads(done.stdout)["dataset_events"] == 3
    assert table(home, "SELECT dataset, partition FROM dataset_events ORDER BY id") == [
        ("warehouse.orders", "p10"), ("warehouse.customers", "p200")]
    assert table(home, "SELECT partition FROM dataset_triggers") == [("p10",)]
    store = Store.open(config.db_path)
    try:  # the consumer is up to date: no old partition comes back
        found = store.datasets.readiness("report", ["warehouse.orders"], "same_partition")
        assert (found.ready, found.waiting) == ({}, {})
        # an old partition re-written now is news, and is consumed again
        store.datasets.emit("warehouse.orders", "p120", {}, "loader")
        found = store.datasets.readiness("report", ["warehouse.orders"], "same_partition")
        assert list(found.ready) == ["p120"]
        # and ids go on from the newest: a consumer's watermark never sees an id twice
        assert max(table(home, "SELECT id FROM dataset_events")[-1]) > 5
    finally:
        store.close()
    listed = {r["name"]: r for r in json.loads(flowtui(
        "datasets", "list", "--json", home=home, pipelines=pipelines).stdout)}
    assert listed["warehouse.customers"]["newest_partition"] == "p200"
    # the counts follow what is left: p10, and p120 written again
    orders = listed["warehouse.orders"]
    assert (orders["events"], orders["partitions"], orders["newest_partition"]) == (2, 2, "p120")
