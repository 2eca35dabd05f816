"""Datasets (SPEC 9): a task's outlets record events when it succeeds, and a DAG scheduled by
datasets gets exactly one run per partition, with `ds` equal to the partition, whoever wrote
the events and whenever a runner was there to see them. The real daemon (in process, on a
driven clock), real task processes and a real SQLite file; `flowtui` commands as a user types
them."""
from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import flowtui, write

from flowtui.runner import executor
from flowtui.runner.clock import ManualClock
from flowtui.runner.config import load_config
from flowtui.runner.daemon import Daemon

PRODUCERS = """
dag_id: {name}
tasks:
  load:
    command: 'while [ ! -e {gate} ]; do sleep 0.02; done; echo "::flowtui metadata rows=1500"'
    outlets: [warehouse.{name}]
"""
REPORT = """
dag_id: report
schedule: {{datasets: [warehouse.orders, warehouse.customers]{match}}}
tasks:
  build: {{command: 'echo "$FLOWTUI_DS" >> {out}'}}
"""


@pytest.fixture(autouse=True)
def _woken_in_process():
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)
    yield
    signal.signal(signal.SIGUSR1, previous)


@pytest.fixture
def lineage(home: Path, pipelines: Path, tmp_path: Path) -> Path:
    gate = tmp_path / "gate"
    for name in ("orders", "customers"):
        write(pipelines, f"{name}.yaml", PRODUCERS.format(name=name, gate=gate))
    out = tmp_path / "report.out"
    write(pipelines, "report.yaml", REPORT.format(out=out, match=""))
    return gate


def runs(home: Path, dag_id: str) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(home / "flowtui.db")
    try:
        return conn.execute("SELECT run_id, state, run_type FROM dag_runs WHERE dag_id = ? "
                            "ORDER BY id", (dag_id,)).fetchall()
    finally:
        conn.close()


def serve_until_settled(daemon: Daemon, clock: ManualClock, done, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the daemon did not settle"
        daemon.run_until_idle()
        clock.advance(0.5)
        daemon.tick(clock.now())


def test_two_producers_finishing_together_give_one_consumer_run_per_partition(
        home: Path, pipelines: Path, tmp_path: Path, lineage: Path) -> None:
    for name in ("orders", "customers"):
        for date in ("2026-03-27", "2026-03-28"):
            assert flowtui("trigger", name, "--date", date, home=home,
                           pipelines=pipelines).returncode == 0
    clock = ManualClock(start=time.time())
    daemon = Daemon(load_config(home, pipelines), clock=clock)
    try:
        daemon.start()
        daemon.engine.turn()
        lineage.write_text("open")  # all four producer tasks end at once
        serve_until_settled(daemon, clock, lambda: len(runs(home, "report")) >= 2 and all(
            r[1] == "success" for r in runs(home, "report") + runs(home, "orders")))
        for _ in range(3):  # later turns and ticks create nothing more
            clock.advance(5)
            daemon.tick(clock.now())
            daemon.run_until_idle()
    finally:
        daemon.close()
    assert sorted(runs(home, "report")) == [("dataset__2026-03-27", "success", "dataset"),
                                            ("dataset__2026-03-28", "success", "dataset")]
    # Each run's ds is its partition.
    assert sorted((tmp_path / "report.out").read_text().split()) == ["2026-03-27", "2026-03-28"]
    shown = json.loads(flowtui("datasets", "show", "warehouse.orders", "--json", home=home,
                               pipelines=pipelines).stdout)
    assert {e["partition"] for e in shown["events"]} == {"2026-03-27", "2026-03-28"}
    assert all(e["metadata"] == {"rows": "1500"} or e["metadata"] == {"rows": 1500}
               for e in shown["events"])
    assert shown["producers"] == ["orders.load"]


def test_events_written_while_no_runner_lives_are_consumed_once_on_start(
        home: Path, pipelines: Path, tmp_path: Path, lineage: Path) -> None:
    lineage.write_text("open")
    assert flowtui("dags", "list", home=home, pipelines=pipelines).returncode == 0  # known
    # One producer runs in the foreground (no runner), the other dataset comes from outside.
    assert flowtui("run", "orders", "--date", "2026-03-28", home=home,
                   pipelines=pipelines).returncode == 0
    shown = flowtui("datasets", "show", "warehouse.orders", home=home, pipelines=pipelines)
    assert "consumer report: waiting for warehouse.customers 2026-03-28" in shown.stdout
    emitted = flowtui("datasets", "emit", "warehouse.customers", "--partition", "2026-03-28",
                      "--meta", "rows=42", home=home, pipelines=pipelines)
    assert emitted.returncode == 0 and "no runner is alive" in emitted.stdout
    assert runs(home, "report") == []
    for _ in range(2):  # a runner starts, and later another: the run is created once
        clock = ManualClock(start=time.time())
        daemon = Daemon(load_config(home, pipelines), clock=clock)
        try:
            daemon.start()
            serve_until_settled(daemon, clock, lambda: runs(home, "report") and all(
                r[1] == "success" for r in runs(home, "report")))
        finally:
            daemon.close()
    assert runs(home, "report") == [("dataset__2026-03-28", "success", "dataset")]
    audit = sqlite3.connect(home / "flowtui.db").execute(
        "SELECT action FROM audit_log WHERE action = 'datasets emit'").fetchall()
    assert len(audit) == 1


def test_a_producer_rerun_triggers_the_partition_again(
        home: Path, pipelines: Path, tmp_path: Path, lineage: Path) -> None:
    lineage.write_text("open")
    flowtui("dags", "list", home=home, pipelines=pipelines)
    clock = ManualClock(start=time.time())
    daemon = Daemon(load_config(home, pipelines), clock=clock)
    try:
        daemon.start()
        for name in ("orders", "customers"):
            flowtui("run", name, "--date", "2026-03-28", home=home, pipelines=pipelines)
        daemon.tick(clock.now())
        serve_until_settled(daemon, clock, lambda: len(runs(home, "report")) == 1 and
                            runs(home, "report")[0][1] == "success")
        # orders is re-run for that day: a new event, so the report runs again for it;
        # customers' old event still stands for the partition.
        flowtui("run", "orders", "--date", "2026-03-28", home=home, pipelines=pipelines)
        daemon.tick(clock.now())
        serve_until_settled(daemon, clock, lambda: len(runs(home, "report")) == 2 and
                            runs(home, "report")[1][1] == "success")
    finally:
        daemon.close()
    assert [r[0] for r in runs(home, "report")] == ["dataset__2026-03-28",
                                                    "dataset__2026-03-28.2"]


def test_match_any_runs_for_each_new_event_and_same_partition_waits_for_all(
        home: Path, pipelines: Path, tmp_path: Path, lineage: Path) -> None:
    write(pipelines, "any_report.yaml", REPORT.format(out=tmp_path / "any.out",
                                                      match=", match: any")
          .replace("dag_id: report", "dag_id: any_report"))
    flowtui("dags", "list", home=home, pipelines=pipelines)
    clock = ManualClock(start=time.time())
    daemon = Daemon(load_config(home, pipelines), clock=clock)
    try:
        daemon.start()
        flowtui("datasets", "emit", "warehouse.orders", "--partition", "2026-03-28",
                home=home, pipelines=pipelines)
        daemon.tick(clock.now())
        serve_until_settled(daemon, clock, lambda: len(runs(home, "any_report")) == 1 and
                            runs(home, "any_report")[0][1] == "success")
        assert runs(home, "report") == []  # same_partition: customers has not arrived
        flowtui("datasets", "emit", "warehouse.customers", "--partition", "2026-03-28",
                home=home, pipelines=pipelines)
        daemon.tick(clock.now())
        serve_until_settled(daemon, clock, lambda: len(runs(home, "any_report")) == 2 and len(
            runs(home, "report")) == 1 and all(r[1] == "success" for r in runs(home, "report")
                                               + runs(home, "any_report")))
    finally:
        daemon.close()


def test_a_bad_dataset_schedule_is_one_line(home: Path, pipelines: Path) -> None:
    write(pipelines, "bad.yaml", """
        dag_id: bad
        schedule: {datasets: [], match: sometimes}
        tasks:
          a: {command: 'true'}
    """)
    done = flowtui("dags", "check", home=home, pipelines=pipelines)
    assert done.returncode == 1
    assert "datasets: name at least one dataset" in done.stdout + done.stderr


def test_dags_show_names_what_a_dag_reads_and_writes(home: Path, pipelines: Path,
                                                      lineage: Path) -> None:
    shown = flowtui("dags", "show", "report", home=home, pipelines=pipelines).stdout
    assert "schedule: datasets: warehouse.orders, warehouse.customers" in shown
    listed = flowtui("dags", "list", home=home, pipelines=pipelines).stdout
    assert "datasets: warehouse.orders, warehouse.customers" in listed
    shown = flowtui("dags", "show", "orders", home=home, pipelines=pipelines).stdout
    assert "load: reads -; writes warehouse.orders" in shown
    listed = json.loads(flowtui("datasets", "list", "--json", home=home,
                                pipelines=pipelines).stdout)
    assert {row["name"]: (row["producers"], row["consumers"]) for row in listed} == {
        "warehouse.customers": (["customers.load"], ["report"]),
        "warehouse.orders": (["orders.load"], ["report"])}


def test_a_stale_dataset_pages_and_its_next_event_resolves_it(home: Path, pipelines: Path,
                                                               tmp_path: Path) -> None:
    from test_alerts import Hooks

    hooks = Hooks()
    try:
        home.mkdir(parents=True, exist_ok=True)
        (home / "flowtui.toml").write_text(f"""
[channels.desk]
type = "webhook"
url = "{hooks.url}/stale"
[policies.data]
on = ["dataset_stale"]
steps = [{{after = "0m", notify = ["desk"]}}]
""")
        write(pipelines, "orders.yaml", """
            dag_id: orders
            alerts: [data]
            datasets:
              warehouse.orders: {freshness: {max_age: 2h}}
            tasks:
              load: {command: 'true', outlets: [warehouse.orders]}
        """)
        assert flowtui("run", "orders", home=home, pipelines=pipelines).returncode == 0
        clock = ManualClock(start=time.time())
        daemon = Daemon(load_config(home, pipelines), clock=clock)
        try:
            daemon.start()
            daemon.run_until_idle()
            due = daemon.tick(clock.now())
            assert due <= time.time() + 2 * 3600 + 1  # it wakes when the dataset goes stale
            assert query_alerts(home) == []
            clock.advance(2 * 3600 + 5)  # nothing failed; the producer just stopped
            daemon.tick(clock.now())
            assert query_alerts(home) == [("dataset_stale", "orders", "warehouse.orders", "open")]
            deadline = time.monotonic() + 15
            while not hooks.to("/stale"):
                assert time.monotonic() < deadline, "the stale alert reached no channel"
                time.sleep(0.05)
            assert "warehouse.orders" in json.dumps(hooks.to("/stale")[0])
            # The next event (the emit command's own code, on this clock) resolves it.
            daemon.store.datasets.emit("warehouse.orders", "2026-03-28", {}, "loader")
            daemon.tick(clock.now())
            assert query_alerts(home) == [("dataset_stale", "orders", "warehouse.orders",
                                           "resolved")]
        finally:
            daemon.close()
    finally:
        hooks.server.shutdown()


def query_alerts(home: Path) -> list[tuple]:
    conn = sqlite3.connect(home / "flowtui.db")
    try:
        return conn.execute("SELECT kind, dag_id, task_id, state FROM alerts").fetchall()
    finally:
        conn.close()


def test_thirty_partitions_backfilled_give_thirty_consumer_runs_none_twice(
        home: Path, pipelines: Path, tmp_path: Path) -> None:
    write(pipelines, "daily_orders.yaml", """
        dag_id: daily_orders
        schedule: "@daily"
        start_date: 2026-03-01
        tasks:
          load: {command: 'true', outlets: [warehouse.orders]}
    """)
    out = tmp_path / "report.out"
    write(pipelines, "report.yaml", f"""
        dag_id: report
        max_active_runs: 2
        schedule: {{datasets: [warehouse.orders]}}
        tasks:
          build: {{command: 'echo "$FLOWTUI_DS" >> {out}'}}
    """)
    assert flowtui("dags", "pause", "daily_orders", home=home,
                   pipelines=pipelines).returncode == 0  # only the backfill makes its runs
    done = flowtui("backfill", "daily_orders", "--start", "2026-03-01", "--end", "2026-03-30",
                   "--parallelism", "4", "--wait", home=home, pipelines=pipelines)
    assert done.returncode == 0, done.stderr
    clock = ManualClock(start=time.time())
    daemon = Daemon(load_config(home, pipelines), clock=clock)
    most_at_once = 0
    try:
        daemon.start()
        deadline = time.monotonic() + 60
        while len([r for r in runs(home, "report") if r[1] == "success"]) < 30:
            assert time.monotonic() < deadline, runs(home, "report")
            running = [r for r in runs(home, "report") if r[1] == "running"]
            most_at_once = max(most_at_once, len(running))
            daemon.engine.turn()
            clock.advance(0.1)
            daemon.tick(clock.now())
    finally:
        daemon.close()
    made = runs(home, "report")
    assert len(made) == 30 and len({r[0] for r in made}) == 30
    assert sorted(out.read_text().split()) == [f"2026-03-{d:02d}" for d in range(1, 31)]
    assert most_at_once <= 2  # the consumer's max_active_runs throttles them


def test_the_lineage_sample_runs_its_consumers_for_the_day_that_landed(
        home: Path, tmp_path: Path) -> None:
    import shutil

    samples = Path(__file__).resolve().parent.parent / "sample_pipelines"
    pipes = tmp_path / "samples"
    pipes.mkdir()
    for name in ("orders_lineage.yaml", "daily_revenue_report.yaml",
                 "customer_churn_model.yaml"):
        shutil.copy(samples / name, pipes)
    assert flowtui("dags", "list", home=home, pipelines=pipes).returncode == 0
    assert flowtui("run", "orders_lineage", "--date", "2026-03-28", home=home,
                   pipelines=pipes).returncode == 0
    # Paused, its cron makes no run of its own meanwhile: the consumers see one day only.
    assert flowtui("dags", "pause", "orders_lineage", home=home, pipelines=pipes).returncode == 0
    clock = ManualClock(start=time.time())
    daemon = Daemon(load_config(home, pipes), clock=clock)
    try:
        daemon.start()
        serve_until_settled(daemon, clock, lambda: all(
            runs(home, dag) and runs(home, dag)[-1][1] == "success"
            for dag in ("daily_revenue_report", "customer_churn_model")))
    finally:
        daemon.close()
    assert [r[0] for r in runs(home, "daily_revenue_report")] == ["dataset__2026-03-28"]
    assert len(runs(home, "customer_churn_model")) == 1
    shown = flowtui("datasets", "show", "warehouse.clean_orders", home=home, pipelines=pipes)
    assert "consumer daily_revenue_report: up to date" in shown.stdout
    assert "rows=18204" in shown.stdout


def test_the_datasets_screen_shows_freshness_and_the_lineage_of_the_selected_dataset(
        home: Path, pipelines: Path, lineage: Path) -> None:
    from app_support import run_async, screen_text, until

    from flowtui.app.app import make_app

    lineage.write_text("open")
    write(pipelines, "orders.yaml", """
        dag_id: orders
        datasets:
          warehouse.orders: {freshness: {max_age: 1h}}
        tasks:
          load: {command: 'true', outlets: [warehouse.orders], inlets: [raw.orders]}
    """)
    assert flowtui("run", "orders", "--date", "2026-03-28", home=home,
                   pipelines=pipelines).returncode == 0
    clock = ManualClock(start=time.time() + 2 * 3600)  # two hours on: the orders are stale

    async def go() -> None:
        app = make_app(load_config(home, pipelines), refresh_seconds=0.2, clock=clock)
        async with app.run_test(size=(120, 32)) as pilot:
            await pilot.press("7")
            await until(pilot, lambda: "warehouse.orders" in screen_text(app), what="the list")
            await pilot.press("slash", *"warehouse.orders", "enter")  # as an operator would
            await until(pilot, lambda: "warehouse.orders  " in screen_text(app) and
                        "writes it" in screen_text(app), what="its lineage")
            shown = screen_text(app)
            assert "stale" in shown and "2026-03-28" in shown
            assert "raw.orders" in shown and "read by orders.load" in shown
            assert "report" in shown and "waiting for warehouse.customers 2026-03-28" in shown
            # Walk the lineage: tab into it, up to what the writer reads, enter follows it
            # (the filter that hid it is lifted), and raw.orders' own lineage is shown.
            await pilot.press("tab", "home", "enter")
            await until(pilot, lambda: "read by orders.load" not in screen_text(app) and
                        "raw.orders  0 events" in screen_text(app), what="raw.orders' lineage")
            assert "orders.load" in screen_text(app) and "reads it" in screen_text(app)
            # and on from there down to the task that reads it, whose DAG opens
            lineage = app.screen.query_one("#lineage")
            keys = [str(k.value) for k in lineage.rows]
            lineage.move_cursor(row=next(i for i, k in enumerate(keys) if k.endswith(
                "|dag:orders")))
            await pilot.press("enter")
            await until(pilot, lambda: type(app.screen).__name__ == "DagScreen",
                        what="the DAG screen")
            assert app.screen.dag_id == "orders"

    run_async(go())


def test_the_graph_shows_what_each_task_writes(home: Path, pipelines: Path) -> None:
    from app_support import run_async, screen_text, until

    from flowtui.app.app import make_app
    from flowtui.app.graph_view import GraphView

    write(pipelines, "orders.yaml", """
        dag_id: orders
        tasks:
          extract: {command: 'true'}
          load: {command: 'true', deps: [extract], outlets: [warehouse.orders, audit.loads]}
          notify: {command: 'true', deps: [extract]}
    """)
    assert flowtui("run", "orders", home=home, pipelines=pipelines).returncode == 0

    async def go() -> None:
        app = make_app(load_config(home, pipelines), refresh_seconds=0.2)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("1", "slash", *"orders", "enter")
            await until(pilot, lambda: app.screen.table.row_count == 1, what="the DAG")
            await pilot.press("enter")
            await until(pilot, lambda: "DAG orders" in screen_text(app), what="the DAG screen")
            await pilot.press("g")
            view = app.screen.query_one(GraphView)
            await until(pilot, lambda: "⇢" in view.plain(), what="the outlets")
            drawing = view.plain()
            rows = {task: line for line in drawing.splitlines()
                    for task in ("extract", "load", "notify") if f" {task}" in line}
            assert set(rows) == {"extract", "load", "notify"}, drawing
            assert rows["load"].endswith("⇢ warehouse.orders, audit.loads")
            assert "⇢" not in rows["extract"] and "⇢" not in rows["notify"]

    run_async(go())


def test_a_paused_consumer_lists_then_takes_what_arrived_meanwhile(
        home: Path, pipelines: Path, lineage: Path) -> None:
    assert flowtui("dags", "pause", "report", home=home, pipelines=pipelines).returncode == 0
    for name in ("warehouse.orders", "warehouse.customers"):
        for day in ("2026-03-27", "2026-03-28"):
            flowtui("datasets", "emit", name, "--partition", day, home=home, pipelines=pipelines)
    clock = ManualClock(start=time.time())
    daemon = Daemon(load_config(home, pipelines), clock=clock)
    try:
        daemon.start()
        daemon.run_until_idle()
        assert runs(home, "report") == []  # paused: nothing is consumed
        shown = flowtui("datasets", "show", "warehouse.orders", home=home,
                        pipelines=pipelines).stdout
        assert "waits: the DAG is paused ('flowtui dags unpause report')" in shown
        listed = flowtui("dags", "unpause", "report", "--dry-run", home=home,
                         pipelines=pipelines).stdout
        assert "would create 2 run(s)" in listed
        assert "partition 2026-03-27" in listed and "partition 2026-03-28" in listed
        assert runs(home, "report") == []  # a dry run changes nothing
        assert flowtui("dags", "unpause", "report", home=home,
                       pipelines=pipelines).returncode == 0
        daemon.tick(clock.now())
        serve_until_settled(daemon, clock, lambda: len(runs(home, "report")) == 2 and all(
            r[1] == "success" for r in runs(home, "report")))
    finally:
        daemon.close()
    assert sorted(r[0] for r in runs(home, "report")) == ["dataset__2026-03-27",
                                                          "dataset__2026-03-28"]


def test_kill_9_of_the_runner_around_a_producer_end_creates_the_consumer_run_once(
        home: Path, pipelines: Path, tmp_path: Path, runners: list) -> None:
    from daemon_support import start, wait_for

    gate = tmp_path / "gate"
    write(pipelines, "orders.yaml", PRODUCERS.format(name="orders", gate=gate))
    write(pipelines, "report.yaml", f"""
        dag_id: report
        schedule: {{datasets: [warehouse.orders]}}
        tasks:
          build: {{command: 'echo "$FLOWTUI_DS" >> {tmp_path / "out"}'}}
    """)
    runner = start(runners, home, pipelines)
    assert flowtui("trigger", "orders", "--date", "2026-03-28", home=home,
                   pipelines=pipelines).returncode == 0
    wait_for(lambda: runs(home, "orders") and runs(home, "orders")[0][1] == "running", 20,
             "the producer to run")
    runner.kill9()  # the producer's task lives on; its end is for the next runner to record
    gate.write_text("open")
    mark = table_rows(home, "SELECT exit_path FROM tries")[0][0]
    wait_for(lambda: executor.read_exit_status(mark) is not None, 20,
             "the producer to end while no runner lives")
    runner = start(runners, home, pipelines)
    wait_for(lambda: runs(home, "report") and runs(home, "report")[0][1] == "success", 30,
             "the consumer run")
    runner.kill9()  # and once more, right after: the next runner creates nothing new
    start(runners, home, pipelines)
    # A probe run that succeeds proves the new runner is past its start (where it catches up).
    write(pipelines, "probe.yaml", "dag_id: probe\ntasks:\n  a: {command: 'true'}\n")
    assert flowtui("trigger", "probe", home=home, pipelines=pipelines).returncode == 0
    wait_for(lambda: runs(home, "probe") and runs(home, "probe")[0][1] == "success", 30,
             "the probe run")
    assert runs(home, "report") == [("dataset__2026-03-28", "success", "dataset")]
    assert (tmp_path / "out").read_text().split() == ["2026-03-28"]


def table_rows(home: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(home / "flowtui.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_a_dataset_run_id_is_shortened_like_the_others_at_80_columns() -> None:
    from flowtui.app.render import short_run

    assert short_run("dataset__2026-03-28") == "dataset 03-28"
    assert short_run("dataset__2026-03-28.2") == "dataset 03-28.2"  # a producer's re-run
    assert short_run("scheduled__2026-03-28T06:00:00+00:00") == "scheduled 03-28 06:00"


def test_a_dag_that_would_trigger_itself_through_datasets_is_refused(home: Path,
                                                                      pipelines: Path) -> None:
    write(pipelines, "loop.yaml", """
        dag_id: loop
        schedule: {datasets: [self.ds]}
        tasks:
          a: {command: 'true', outlets: [self.ds]}
    """)
    write(pipelines, "a.yaml", "dag_id: a\nschedule: {datasets: [x]}\ntasks:\n"
                               "  t: {command: 'true', outlets: [y]}\n")
    write(pipelines, "b.yaml", "dag_id: b\nschedule: {datasets: [y]}\ntasks:\n"
                               "  t: {command: 'true', outlets: [x]}\n")
    write(pipelines, "fine.yaml", "dag_id: fine\nschedule: {datasets: [y]}\ntasks:\n"
                                  "  t: {command: 'true', outlets: [z]}\n")
    done = flowtui("dags", "check", home=home, pipelines=pipelines)
    assert done.returncode == 1
    assert "DAG 'loop' would trigger itself through datasets (loop -> loop)" in done.stdout
    assert "(a -> b -> a)" in done.stdout and "(b -> a -> b)" in done.stdout
    assert "'fine'" not in done.stdout and "1 DAG(s), 3 error(s)" in done.stdout


def test_names_and_partitions_never_drive_the_screen(home: Path, pipelines: Path,
                                                     lineage: Path) -> None:
    from app_support import run_async, screen_text, until

    from flowtui.app.app import make_app

    assert flowtui("datasets", "emit", "warehouse.orders", "--partition", "[/oops]",
                   home=home, pipelines=pipelines).returncode == 0
    assert flowtui("datasets", "emit", "evil\x1b]0;PWNED\x07", "--partition", "p\x1b[2J",
                   home=home, pipelines=pipelines).returncode == 0

    async def go() -> None:
        app = make_app(load_config(home, pipelines), refresh_seconds=0.2)
        async with app.run_test(size=(120, 32)) as pilot:
            await pilot.press("7")
            await until(pilot, lambda: "[/oops]" in screen_text(app), what="the partition")
            assert "evil^[]0;PWNED^G" in screen_text(app)

    run_async(go())


def test_a_stale_alert_resolves_when_its_policy_is_removed(home: Path, pipelines: Path) -> None:
    orders = """
        dag_id: orders
        datasets:
          warehouse.orders: {freshness: {max_age: 2h}}
        tasks:
          load: {command: 'true', outlets: [warehouse.orders]}
    """
    write(pipelines, "orders.yaml", orders)
    assert flowtui("run", "orders", home=home, pipelines=pipelines).returncode == 0
    clock = ManualClock(start=time.time() + 2 * 3600 + 5)
    daemon = Daemon(load_config(home, pipelines), clock=clock)
    try:
        daemon.start()
        daemon.tick(clock.now())
        assert query_alerts(home) == [("dataset_stale", "orders", "warehouse.orders", "open")]
        write(pipelines, "orders.yaml", """
            dag_id: orders
            tasks:
              load: {command: 'true', outlets: [warehouse.orders]}
        """)  # the freshness policy is gone
        clock.advance(daemon.scan_interval + 1)  # the next rescan sees the edit
        daemon.tick(clock.now())
        assert query_alerts(home) == [("dataset_stale", "orders", "warehouse.orders",
                                       "resolved")]
    finally:
        daemon.close()


def test_a_dataset_added_to_a_consumer_brings_no_old_partition_back(
        home: Path, pipelines: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.out"
    consumer = "dag_id: r\nschedule: {{datasets: [{names}]}}\ntasks:\n  t: {{command: 'echo $FLOWTUI_DS >> {out}'}}\n"
    write(pipelines, "r.yaml", consumer.format(names="a", out=out))
    flowtui("dags", "list", home=home, pipelines=pipelines)
    for name in ("b", "a"):
        flowtui("datasets", "emit", name, "--partition", "2026-01-01", home=home,
                pipelines=pipelines)
    clock = ManualClock(start=time.time())
    daemon = Daemon(load_config(home, pipelines), clock=clock)
    try:
        daemon.start()
        serve_until_settled(daemon, clock, lambda: runs(home, "r") and runs(home, "r")[0][1] ==
                            "success")
    finally:
        daemon.close()
    write(pipelines, "r.yaml", consumer.format(names="a, b", out=out))  # b joins the schedule
    daemon = Daemon(load_config(home, pipelines), clock=clock)
    try:
        daemon.start()
        daemon.run_until_idle()
        assert [r[0] for r in runs(home, "r")] == ["dataset__2026-01-01"]  # b's old event
        flowtui("datasets", "emit", "b", "--partition", "2026-01-01", home=home,
                pipelines=pipelines)  # a new one does run the partition again
        daemon.tick(clock.now())
        serve_until_settled(daemon, clock, lambda: len(runs(home, "r")) == 2 and
                            runs(home, "r")[1][1] == "success")
    finally:
        daemon.close()


def test_emit_refuses_an_empty_partition_and_show_keeps_one_line_per_event(
        home: Path, pipelines: Path, lineage: Path) -> None:
    done = flowtui("datasets", "emit", "warehouse.orders", "--partition", " ", home=home,
                   pipelines=pipelines)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--partition" in done.stderr
    assert flowtui("datasets", "emit", "warehouse.orders", "--partition", "2026-03-28", "--meta",
                   "note=line one\nforged line", home=home, pipelines=pipelines).returncode == 0
    shown = flowtui("datasets", "show", "warehouse.orders", home=home, pipelines=pipelines)
    assert "\nforged line" not in shown.stdout and "line one^Jforged line" in shown.stdout


def test_datasets_list_gives_each_dataset_its_freshness_and_partitions(
        home: Path, pipelines: Path) -> None:
    write(pipelines, "orders.yaml", """
        dag_id: orders
        datasets:
          warehouse.orders: {freshness: {max_age: 2h}}
        tasks:
          load: {command: 'true', outlets: [warehouse.orders]}
    """)
    home.mkdir(parents=True, exist_ok=True)
    (home / "flowtui.toml").write_text('[datasets."ext.feed"]\nfreshness = {max_age = "1h"}\n')
    for day in ("2026-03-27", "2026-03-28"):
        assert flowtui("run", "orders", "--date", day, home=home,
                       pipelines=pipelines).returncode == 0
    listed = {row["name"]: row for row in json.loads(flowtui(
        "datasets", "list", "--json", home=home, pipelines=pipelines).stdout)}
    assert listed["warehouse.orders"]["freshness"] == "fresh"
    assert listed["warehouse.orders"]["partitions"] == 2
    assert listed["ext.feed"]["freshness"] == "no event yet"  # watched from flowtui.toml
    text = flowtui("datasets", "list", home=home, pipelines=pipelines).stdout
    assert "warehouse.orders  2026-03-28" in text and "2 partition(s)  fresh" in text
    # show says the same of one dataset
    shown = json.loads(flowtui("datasets", "show", "warehouse.orders", "--json", home=home,
                               pipelines=pipelines).stdout)
    assert (shown["freshness"], shown["partitions"], shown["events"][0]["partition"]) == (
        "fresh", 2, "2026-03-28")
    first = flowtui("datasets", "show", "warehouse.orders", home=home,
                    pipelines=pipelines).stdout.splitlines()[0]
    assert first.startswith("dataset warehouse.orders  newest 2026-03-28, ")
    assert first.endswith("2 partition(s), 2 event(s)  freshness: fresh")
    assert "freshness: no event yet" in flowtui("datasets", "show", "ext.feed", home=home,
                                                pipelines=pipelines).stdout


def test_dags_check_names_a_bad_freshness_in_flowtui_toml(home: Path, pipelines: Path) -> None:
    write(pipelines, "orders.yaml", """
        dag_id: orders
        tasks:
          load: {command: 'true', outlets: [warehouse.orders]}
    """)
    home.mkdir(parents=True, exist_ok=True)
    (home / "flowtui.toml").write_text(
        '[datasets."warehouse.orders"]\nfreshness = {max_age = "soon"}\n')
    done = flowtui("dags", "check", home=home, pipelines=pipelines)
    assert done.returncode == 1
    lines = [line for line in done.stdout.splitlines() if "datasets.warehouse.orders" in line]
    assert len(lines) == 1 and "flowtui.toml" in lines[0] and "max_age" in lines[0], done.stdout
    assert "1 error(s)" in done.stdout


def test_a_partition_that_is_not_a_day_reaches_the_task_and_the_next_hop(
        home: Path, pipelines: Path, tmp_path: Path) -> None:
    # raw.orders arrives per region; clean_orders consumes it per region and writes
    # warehouse.orders for that same region; the report consumes that in turn.
    out = tmp_path / "out"
    write(pipelines, "clean.yaml", f"""
dag_id: clean
schedule: {{datasets: [raw.orders]}}
tasks:
  clean: {{command: 'echo "clean {{{{ partition }}}} $FLOWTUI_RUN_ID" >> {out}',
           outlets: [warehouse.orders]}}
""")
    write(pipelines, "report.yaml", f"""
dag_id: report
schedule: {{datasets: [warehouse.orders]}}
tasks:
  build: {{command: 'echo "report {{{{ partition }}}} $FLOWTUI_RUN_ID" >> {out}'}}
""")
    assert flowtui("dags", "list", home=home, pipelines=pipelines).returncode == 0  # known
    for region in ("eu-west", "us/east; rm -rf ~"):  # the second is no name for a folder
        assert flowtui("datasets", "emit", "raw.orders", "--partition", region, home=home,
                       pipelines=pipelines).returncode == 0
    clock = ManualClock(start=time.time())
    daemon = Daemon(load_config(home, pipelines), clock=clock)
    try:
        daemon.start()
        serve_until_settled(daemon, clock, lambda: len(runs(home, "report")) == 2 and all(
            r[1] == "success" for r in runs(home, "report")))
    finally:
        daemon.close()
    lines = sorted(out.read_text().splitlines())
    assert lines[0] == "clean eu-west dataset__eu-west"
    assert lines[1].startswith("clean us/east; rm -rf ~ dataset__2")  # named by its moment
    assert lines[2] == "report eu-west dataset__eu-west"
    assert lines[3].startswith("report us/east; rm -rf ~ dataset__2")
    shown = json.loads(flowtui("datasets", "show", "warehouse.orders", "--json", home=home,
                               pipelines=pipelines).stdout)
    assert {e["partition"] for e in shown["events"]} == {"eu-west", "us/east; rm -rf ~"}


def test_a_long_datasets_list_shows_stale_first_and_reaches_the_rest_by_filter(
        home: Path, pipelines: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app_support import run_async, screen_text, until

    from flowtui.app import datasets_screen
    from flowtui.app.app import make_app

    monkeypatch.setattr(datasets_screen, "SHOWN", 3)
    write(pipelines, "lake.yaml", """
        dag_id: lake
        datasets:
          zz.late: {freshness: {max_age: 1h}}
        tasks:
          a: {command: 'true', outlets: [aa.one, aa.two, aa.three, zz.late]}
          b: {command: 'true', inlets: [aa.one], outlets: [mm.hidden]}
    """)
    assert flowtui("run", "lake", home=home, pipelines=pipelines).returncode == 0
    clock = ManualClock(start=time.time() + 2 * 3600)  # zz.late is stale

    async def go() -> None:
        app = make_app(load_config(home, pipelines), refresh_seconds=0.2, clock=clock)
        async with app.run_test(size=(120, 32)) as pilot:
            await pilot.press("7")
            await until(pilot, lambda: "the first 3 of 5 shown" in screen_text(app),
                        what="the capped list")
            assert "Datasets: 5, 1 stale" in screen_text(app)
            keys = [str(k.value) for k in app.screen.table.rows]
            assert keys == ["zz.late", "aa.one", "aa.three"]  # stale first, then by name
            # mm.hidden is past the rows shown; following it from aa.one's lineage finds it
            await pilot.press("j", "tab")
            lineage = app.screen.query_one("#lineage")
            rows = [str(k.value) for k in lineage.rows]
            lineage.move_cursor(row=next(i for i, k in enumerate(rows)
                                         if k.endswith("|ds:mm.hidden")))
            await pilot.press("enter")
            await until(pilot, lambda: "mm.hidden  1 event" in screen_text(app),
                        what="mm.hidden's lineage")
            assert "filter: mm.hidden" in screen_text(app)

    run_async(go())


def test_dags_check_names_a_dataset_nothing_writes(home: Path, pipelines: Path) -> None:
    write(pipelines, "orders.yaml", """
        dag_id: orders
        tasks:
          load: {command: 'true', outlets: [warehouse.orders]}
    """)
    write(pipelines, "report.yaml", """
        dag_id: report
        schedule: {datasets: [warehouse.ordres, vendor.feed]}
        tasks:
          build: {command: 'true'}
    """)
    done = flowtui("dags", "check", home=home, pipelines=pipelines)
    assert done.returncode == 1
    lines = [line for line in done.stdout.splitlines() if "report" in line]
    assert len(lines) == 2, done.stdout
    assert "'warehouse.ordres'" in lines[0] and "did you mean 'warehouse.orders'?" in lines[0]
    assert "'vendor.feed'" in lines[1] and '[datasets."vendor.feed"]' in lines[1]
    # a feed from outside is declared (or has had an event): then all is well
    write(pipelines, "report.yaml", """
        dag_id: report
        schedule: {datasets: [warehouse.orders, vendor.feed]}
        tasks:
          build: {command: 'true'}
    """)
    home.mkdir(parents=True, exist_ok=True)
    (home / "flowtui.toml").write_text('[datasets."vendor.feed"]\n')
    done = flowtui("dags", "check", home=home, pipelines=pipelines)
    assert done.returncode == 0 and "OK" in done.stdout, done.stdout
    # and the other DAGs load and run meanwhile
    assert flowtui("run", "orders", home=home, pipelines=pipelines).returncode == 0
