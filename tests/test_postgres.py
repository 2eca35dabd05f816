"""The store on PostgreSQL (SPEC 10): the same product on a real server (tests/pg_support.py
starts one with initdb and pg_ctl on 127.0.0.1). `flowtui` commands, the runner and the TUI
are pointed at it by $FLOWTUI_DATABASE_URL as a user would; nothing is written to a SQLite file."""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from conftest import flowtui, write

from flowtui.runner.clock import ManualClock
from flowtui.runner.config import load_config
from flowtui.runner.daemon import Daemon
from flowtui.store import Store

FLAKY = """
dag_id: etl
tasks:
  extract:
    command: 'n=$(cat {count} 2>/dev/null || echo 0); echo $((n+1)) > {count}; [ $n -ge 1 ]'
    retries: 2
    retry_delay: 0
  load: {{command: 'echo "loading {{{{ ds }}}}"; echo "ERROR: warehouse refused" >&2; exit 3',
          deps: [extract]}}
"""


@pytest.fixture(autouse=True)
def _woken_in_process():
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)
    yield
    signal.signal(signal.SIGUSR1, previous)


def test_the_postgresql_schema_has_every_sqlite_column(pg_url: str, tmp_path: Path) -> None:
    """A migration added to SQLite without its PostgreSQL twin fails here."""
    lite = Store.open(tmp_path / "flowtui.db")
    pg = Store.open(pg_url)
    try:
        tables = [r[0] for r in lite.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "AND name NOT LIKE '\\_%' ESCAPE '\\'")]
        assert len(tables) > 15
        for table in tables:
            columns = {r[1] for r in lite.conn.execute(f"PRAGMA table_info({table})")}
            found = {r[0] for r in pg.conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
                (table,))}
            assert columns <= found, (table, columns - found)
    finally:
        lite.close()
        pg.close()


def test_a_run_with_retries_and_a_failure_on_postgresql(pg_url: str, home: Path,
                                                        pipelines: Path, tmp_path: Path) -> None:
    write(pipelines, "etl.yaml", FLAKY.format(count=tmp_path / "count"))
    done = flowtui("run", "etl", "--date", "2026-03-28", home=home, pipelines=pipelines)
    assert done.returncode == 1, done.stderr
    assert "load" in done.stdout and "warehouse refused" in done.stdout + done.stderr
    assert not (home / "flowtui.db").exists()  # everything went to the server
    tasks = json.loads(flowtui("tasks", "list", "etl", "latest", "--json", home=home,
                               pipelines=pipelines).stdout)
    states = {t["task_id"]: (t["state"], t["try_number"]) for t in tasks}
    assert states == {"extract": ("success", 2), "load": ("failed", 1)}
    runs = flowtui("runs", "list", home=home, pipelines=pipelines).stdout
    assert "etl" in runs and "failed" in runs
    log = flowtui("logs", "etl", "latest", "load", home=home, pipelines=pipelines).stdout
    assert "loading 2026-03-28" in log
    # an operator's clear, without a runner: applied here, and audited
    cleared = flowtui("clear", "etl", "latest", "load", "--yes", home=home, pipelines=pipelines)
    assert cleared.returncode == 0, cleared.stderr
    store = Store.open(pg_url)
    try:
        assert [a.action for a in store.audit_log(limit=5)][0] == "clear"
        assert store.task_instances(store.list_runs("etl", limit=1)[0].pk)[1].state == "none"
    finally:
        store.close()


def test_the_runner_on_postgresql_runs_consumers_once_per_partition(
        pg_url: str, home: Path, pipelines: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    write(pipelines, "orders.yaml", """
dag_id: orders
tasks:
  load: {command: 'echo "::flowtui metadata rows=7"', outlets: [warehouse.orders]}
""")
    write(pipelines, "report.yaml", f"""
dag_id: report
schedule: {{datasets: [warehouse.orders]}}
tasks:
  build: {{command: 'echo "{{{{ ds }}}}" >> {out}'}}
""")
    assert flowtui("dags", "list", home=home, pipelines=pipelines).returncode == 0
    for day in ("2026-03-27", "2026-03-28"):
        assert flowtui("trigger", "orders", "--date", day, home=home,
                       pipelines=pipelines).returncode == 0
    clock = ManualClock(start=time.time())
    daemon = Daemon(load_config(home, pipelines), clock=clock)
    deadline = time.monotonic() + 30
    try:
        daemon.start()
        while not (out.exists() and len(out.read_text().split()) == 2):
            assert time.monotonic() < deadline, "the consumer did not run"
            daemon.run_until_idle()
            clock.advance(0.5)
            daemon.tick(clock.now())
        for _ in range(3):  # later turns create nothing more
            clock.advance(5)
            daemon.tick(clock.now())
            daemon.run_until_idle()
    finally:
        daemon.close()
    assert sorted(out.read_text().split()) == ["2026-03-27", "2026-03-28"]
    listed = json.loads(flowtui("datasets", "list", "--json", home=home,
                                pipelines=pipelines).stdout)
    assert [(d["name"], d["partitions"]) for d in listed] == [("warehouse.orders", 2)]
    runs = json.loads(flowtui("runs", "list", "report", "--json", home=home,
                              pipelines=pipelines).stdout)
    assert sorted(r["run_id"] for r in runs) == ["dataset__2026-03-27", "dataset__2026-03-28"]


def test_the_tui_shows_what_is_on_postgresql(pg_url: str, home: Path, pipelines: Path,
                                             tmp_path: Path) -> None:
    from app_support import run_async, screen_text, until

    from flowtui.app.app import make_app

    write(pipelines, "etl.yaml", FLAKY.format(count=tmp_path / "count"))
    assert flowtui("run", "etl", home=home, pipelines=pipelines).returncode == 1

    async def go() -> None:
        app = make_app(load_config(home, pipelines), refresh_seconds=0.2)
        async with app.run_test(size=(120, 32)) as pilot:
            await until(pilot, lambda: "warehouse refused" in screen_text(app),
                        what="the failure's excerpt on the Now screen")
            await pilot.press("1")
            await until(pilot, lambda: "etl" in screen_text(app), what="the DAGs list")

    run_async(go())


def test_a_database_that_does_not_answer_is_one_line(home: Path, pipelines: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://flowtui:secret@127.0.0.1:{port}/nowhere"
    done = flowtui("runs", "list", home=home, pipelines=pipelines,
                   env={"FLOWTUI_DATABASE_URL": url})
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "cannot connect" in lines[0] and "secret" not in lines[0]
    bad = flowtui("runs", "list", home=home, pipelines=pipelines,
                  env={"FLOWTUI_DATABASE_URL": "mysql://x"})
    assert bad.returncode != 0 and "postgresql://" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_db_migrate_copies_a_sqlite_home_into_postgresql(
        pg_url: str, home: Path, pipelines: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    write(pipelines, "etl.yaml", FLAKY.format(count=tmp_path / "count"))
    lite = {"FLOWTUI_DATABASE_URL": ""}  # this home's SQLite file, as before the move
    assert flowtui("run", "etl", "--date", "2026-03-27", home=home, pipelines=pipelines,
                   env=lite).returncode == 1
    assert flowtui("datasets", "emit", "raw.orders", "--partition", "2026-03-27", home=home,
                   pipelines=pipelines, env=lite).returncode == 0
    before = json.loads(flowtui("tasks", "list", "etl", "latest", "--json", home=home,
                                pipelines=pipelines, env=lite).stdout)
    done = flowtui("db", "migrate", "--to", pg_url, home=home, pipelines=pipelines, env=lite)
    assert done.returncode == 0, done.stderr
    assert "tries: 3 rows" in done.stdout and "copied" in done.stdout
    # the same history, read from the server; the logs (on this host) still open
    after = json.loads(flowtui("tasks", "list", "etl", "latest", "--json", home=home,
                               pipelines=pipelines).stdout)
    assert after == before
    assert "loading 2026-03-27" in flowtui("logs", "etl", "latest", "load", home=home,
                                           pipelines=pipelines).stdout
    assert json.loads(flowtui("datasets", "list", "--json", home=home, pipelines=pipelines)
                      .stdout)[0]["partitions"] == 1
    # new rows continue after the copied ones
    assert flowtui("run", "etl", "--date", "2026-03-28", home=home,
                   pipelines=pipelines).returncode == 1
    runs = json.loads(flowtui("runs", "list", "etl", "--json", home=home,
                              pipelines=pipelines).stdout)
    assert len(runs) == 2
    # a second copy into the same database is refused, in one line
    again = flowtui("db", "migrate", "--to", pg_url, home=home, pipelines=pipelines, env=lite)
    assert again.returncode == 2 and "already holds" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
