"""CLI edges through the real command: terminal-safe pipeline text, logical dates at the ends of
what a datetime holds, and concurrent backfills of one DAG."""
from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import flowtui, write

# ESC, BEL and the rest of C0 but newline, DEL, and C1 (U+0080-U+009F, bytes C2 80-9F in UTF-8).
TERMINAL_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f\x80-\x9f]")

HOSTILE = r"""
dag_id: evil
description: "title \e]0;PWNED\a clear \e[2J red \e[31mRED\e[0m c1 \u009b2J end"
owner: "own\e[5mer"
tags: ["tag\e[7m"]
schedule: "@daily"
timezone: Europe/Berlin
start_date: "2026-01-01"
tasks:
  bad:
    command: "printf 'x\e]0;T\a'; exit 3"
"""


def assert_terminal_safe(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    found = TERMINAL_CONTROL.findall(result.stdout)
    assert not found, (found, result.stdout)


def test_cli_shows_pipeline_and_task_text_without_control_characters(
        home: Path, pipelines: Path) -> None:
    write(pipelines, "evil\x1b[2J.yaml", HOSTILE)
    show = flowtui("dags", "show", "evil", home=home, pipelines=pipelines)
    assert show.returncode == 0, show.stderr
    assert_terminal_safe(show)
    # The text is still there, as visible characters.
    assert "title ^[]0;PWNED^G clear ^[[2J red ^[[31mRED^[[0m c1 <U+009B>2J end" in show.stdout
    assert "evil^[[2J.yaml" in show.stdout
    listed = flowtui("dags", "list", home=home, pipelines=pipelines)
    assert listed.returncode == 0 and "evil^[[2J.yaml" in listed.stdout
    assert_terminal_safe(listed)
    run = flowtui("run", "evil", "--date", "2026-03-01", home=home, pipelines=pipelines)
    assert run.returncode == 1, run.stderr
    assert_terminal_safe(run)
    # A reason that carries task or pipeline text (a sensor's message, a template value).
    conn = sqlite3.connect(home / "flowtui.db")
    with conn:
        conn.execute("UPDATE task_instances SET reason = ?",
                     ("exited 3: \x1b]0;OWNED\x07\x1b[2J\u009b1m\ttab\nnewline",))
    run_id = conn.execute("SELECT run_id FROM dag_runs").fetchone()[0]
    conn.close()
    for argv in (("runs", "list"), ("tasks", "list", "evil", run_id),
                 ("backfill", "evil", "--start", "2026-03-01", "--end", "2026-03-02",
                  "--dry-run"),
                 ("backfill", "evil", "--start", "2026-03-02", "--end", "2026-03-03"),
                 ("backfill", "list")):
        result = flowtui(*argv, home=home, pipelines=pipelines)
        assert result.returncode == 0, (argv, result.stderr)
        assert_terminal_safe(result)
    tasks = flowtui("tasks", "list", "evil", run_id, home=home, pipelines=pipelines)
    assert "exited 3: ^[]0;OWNED^G^[[2J<U+009B>1m^Itab^Jnewline" in tasks.stdout
    # One table row per task: a newline in a reason does not break the table.
    assert len(tasks.stdout.splitlines()) == 3


BERLIN = """
dag_id: daily
schedule: "@daily"
timezone: Europe/Berlin
start_date: "2026-01-01"
tasks:
  t: {command: "true"}
"""


@pytest.mark.parametrize("argv", [
    ("run", "daily", "--date", "0001-01-01"),
    ("trigger", "daily", "--date", "0001-01-01"),
    ("run", "daily", "--date", "0001-01-01T00:30:00"),
    ("backfill", "daily", "--start", "0001-01-01", "--end", "0001-01-03"),
    ("run", "daily", "--date", "9999-12-31"),
    ("trigger", "daily", "--date", "9999-12-31T23:30:00-05:00"),
    ("backfill", "daily", "--start", "9999-12-20", "--end", "9999-12-31"),
])
def test_dates_outside_the_range_are_one_line(home: Path, pipelines: Path,
                                              argv: tuple[str, ...]) -> None:
    write(pipelines, "daily.yaml", BERLIN)
    result = flowtui(*argv, home=home, pipelines=pipelines)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "out of range" in result.stderr
    assert "0001-01-02" in result.stderr and "9999-12-30" in result.stderr


def test_dates_at_the_ends_of_the_range_work(home: Path, pipelines: Path) -> None:
    write(pipelines, "daily.yaml", BERLIN)
    first = flowtui("run", "daily", "--date", "0001-01-02", home=home, pipelines=pipelines)
    assert first.returncode == 0, first.stderr
    plan = flowtui("backfill", "daily", "--start", "9999-12-28", "--end", "9999-12-30",
                   "--dry-run", home=home, pipelines=pipelines)
    assert plan.returncode == 0, plan.stderr
    assert [l.split()[1] for l in plan.stdout.splitlines() if l.startswith("  create")] == [
        "9999-12-28", "9999-12-29", "9999-12-30"]
    last = flowtui("trigger", "daily", "--date", "9999-12-30", home=home, pipelines=pipelines)
    assert last.returncode == 0, last.stderr
    assert last.stdout.startswith("manual__9999-12-30T00:00:00+01:00")


@pytest.mark.long(7)
def test_concurrent_backfills_of_one_dag_never_double_a_date(tmp_path: Path) -> None:
    """Three `flowtui backfill` processes of one range at once, a few times over: one queues
    the dates, the others refuse with one line or find nothing left; no date gets two runs."""
    for round_ in range(6):
        home, pipelines = tmp_path / f"home{round_}", tmp_path / f"pipelines{round_}"
        home.mkdir()
        write(pipelines, "daily.yaml", BERLIN)
        # Odd rounds say what to do with dates that have runs: no refusal, a plan around them.
        extra = ["--reprocess", "none"] if round_ % 2 else []
        argv = [sys.executable, "-P", "-m", "flowtui", "--home", str(home), "--pipelines",
                str(pipelines), "backfill", "daily", "--start", "2026-03-01", "--end",
                "2026-03-20", *extra]
        procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(3)]
        results = [(p, *p.communicate(timeout=120)) for p in procs]
        queued = 0
        for proc, out, err in results:
            assert "Traceback" not in err, err
            if proc.returncode == 2:
                assert not extra
                assert err.count("\n") == 1 and "overlap backfill" in err, err
            else:
                assert proc.returncode == 0, err
                queued += "run(s) queued" in out
                assert "run(s) queued" in out or "nothing to backfill" in out, out
        assert queued == 1, results
        conn = sqlite3.connect(home / "flowtui.db")
        dates = [r[0] for r in conn.execute(
            "SELECT logical_date FROM dag_runs WHERE dag_id = 'daily'")]
        backfills = conn.execute("SELECT count(*) FROM backfills").fetchone()[0]
        conn.close()
        assert len(dates) == 20 and len(set(dates)) == 20
        assert backfills == 1
