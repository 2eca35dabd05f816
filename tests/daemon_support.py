"""A real ``flowtui runner`` process for tests, and waiting on conditions with deadlines."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import cli_zygote
from conftest import flowtui


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition",
             explain: Callable[[], str] | None = None) -> Any:
    """``check()`` once it is true, within ``timeout`` seconds; past it, fail saying what was
    waited for and what ``explain()`` finds then (the state a stuck test was stuck in)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            found = f"\n{explain()}" if explain is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{found}")
        time.sleep(0.05)


class Runner:
    def __init__(self, home: Path, pipelines: Path) -> None:
        self.home, self.pipelines = home, pipelines
        self.proc = cli_zygote.client().start(
            ["--home", str(home), "--pipelines", str(pipelines), "runner"], dict(os.environ),
            home / "runner.out", session=True)
        wait_for(lambda: (home / "runner.lock").exists() and self._registered(), 15,
                 "the runner to start", self._said)

    def _said(self) -> str:
        """What the runner printed, and whether it still lives (a test that waited in vain)."""
        state = "alive" if self.proc.poll() is None else f"exited {self.proc.returncode}"
        try:
            out = (self.home / "runner.out").read_text()[-2000:]
        except OSError:
            out = ""
        return f"runner pid {self.proc.pid} {state}; it printed:\n{out}"

    def _registered(self) -> bool:
        import sqlite3

        try:
            conn = sqlite3.connect(self.home / "flowtui.db")
            row = conn.execute("SELECT count(*) FROM runners WHERE kind = 'daemon' AND pid = ?",
                               (self.proc.pid,)).fetchone()
            conn.close()
            return bool(row and row[0])
        except sqlite3.Error:
            return False

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def tasks(home: Path, dag_id: str, run_id: str = "latest") -> dict[str, dict[str, Any]]:
    result = flowtui("tasks", "list", dag_id, run_id, "--json", home=home)
    if result.returncode != 0:
        return {}
    return {t["task_id"]: t for t in json.loads(result.stdout)}


def runs(home: Path, dag_id: str | None = None) -> list[dict[str, Any]]:
    args = ["runs", "list", "--json", "--limit", "10000"] + ([dag_id] if dag_id else [])
    result = flowtui(*args, home=home)
    return json.loads(result.stdout) if result.returncode == 0 else []


def tries(home: Path, dag_id: str, task_id: str) -> list[tuple]:
    import sqlite3

    conn = sqlite3.connect(home / "flowtui.db")
    rows = conn.execute(
        "SELECT t.try_number, t.state, t.exit_code, t.reason, t.start_date, t.end_date, t.pid "
        "FROM tries t JOIN dag_runs r ON r.id = t.run_pk WHERE r.dag_id = ? AND t.task_id = ? "
        "ORDER BY r.id DESC, t.try_number", (dag_id, task_id)).fetchall()
    conn.close()
    return rows


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def start(runners: list[Runner], home: Path, pipelines: Path) -> Runner:
    runner = Runner(home, pipelines)
    runners.append(runner)
    return runner


def trigger(home: Path, pipelines: Path, dag_id: str, *extra: str) -> str:
    result = flowtui("trigger", dag_id, *extra, home=home, pipelines=pipelines)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()
