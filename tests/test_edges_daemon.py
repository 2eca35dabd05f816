"""The runner degrades instead of exiting when its database is locked by another process or its
disk is full: it keeps reaping tasks, keeps what they recorded, says so once, and catches up."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import flowtui, write
from daemon_support import alive, tasks, trigger, wait_for

# The daemon with short waits, so that an outage of a second or two is many retries.
DAEMON = """
import sys
from pathlib import Path
from flowtui.runner.config import load_config
from flowtui.runner.daemon import Daemon
home, pipelines = Path(sys.argv[1]), Path(sys.argv[2])
Daemon(load_config(home, pipelines), scan_interval=0.2, busy_timeout=0.1, backoff=0.05,
       alert_after=0.5).serve()
"""

HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


class QuickDaemon:
    """``Daemon(...).serve()`` in a real process of its own, with its stderr kept."""

    def __init__(self, home: Path, pipelines: Path) -> None:
        self.home = home
        self.err_path = pipelines.parent / "daemon.err"  # not on a disk a test fills
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-P", "-c", DAEMON, str(home),
                                      str(pipelines)], stdout=self.err, stderr=self.err,
                                     start_new_session=True)
        wait_for(lambda: self.proc.poll() is not None or (home / "runner.lock").exists()
                 and _daemon_row(home, self.proc.pid), 15, "the runner to start")
        assert self.proc.poll() is None, self.stderr()

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()


def _daemon_row(home: Path, pid: int) -> Any:
    try:
        conn = sqlite3.connect(home / "flowtui.db")
        try:
            return conn.execute("SELECT id, health, last_error FROM runners WHERE kind = "
                                "'daemon' AND pid = ?", (pid,)).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None


@pytest.fixture
def daemons():
    started: list[QuickDaemon] = []
    yield started
    for daemon in started:
        daemon.stop()


def _two_tasks(pipelines: Path) -> None:
    # Each task waits for its go-file, so the test decides when they end.
    go = pipelines.parent / "go"
    write(pipelines, "pair.yaml", f"""
        dag_id: pair
        tasks:
          good: {{command: 'while [ ! -e {go} ]; do sleep 0.05; done; exit 0', retries: 0}}
          bad: {{command: 'while [ ! -e {go} ]; do sleep 0.05; done; exit 7', retries: 0}}
    """)


def _running_pids(home: Path) -> dict[str, int] | None:
    found = tasks(home, "pair")
    if len(found) == 2 and all(t["state"] == "running" and t["pid"] for t in found.values()):
        return {t["task_id"]: t["pid"] for t in found.values()}
    return None


def _ended_with_real_codes(home: Path) -> bool:
    found = tasks(home, "pair")
    return (found.get("good", {}).get("state") == "success"
            and found.get("bad", {}).get("state") == "failed")


def test_a_lock_held_by_another_process_is_waited_out(home: Path, pipelines: Path,
                                                      daemons: list) -> None:
    _two_tasks(pipelines)
    daemon = QuickDaemon(home, pipelines)
    daemons.append(daemon)
    trigger(home, pipelines, "pair")
    pids = wait_for(lambda: _running_pids(home), what="both tasks running")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(home / "flowtui.db")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        (pipelines.parent / "go").touch()
        wait_for(lambda: not any(alive(pid) for pid in pids.values()), what="the tasks to end")
        wait_for(lambda: "cannot write to the database" in daemon.stderr(),
                 what="the runner to report the lock")
        outage_ends = time.monotonic() + 0.6  # longer than the daemon's alert_after (0.5 s)
        # A CLI writer meanwhile: one line and exit 2, never a traceback.
        result = flowtui("trigger", "pair", home=home, pipelines=pipelines,
                         env={"FLOWTUI_BUSY_TIMEOUT": "0.2"})
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "locked by another process" in lines[0] \
            and "try again" in lines[0], result.stderr
        # The runner retried many times while the lock held; it is alive and said it once.
        assert daemon.proc.poll() is None, daemon.stderr()
        assert tasks(home, "pair")["good"]["state"] == "running"  # not written yet
        time.sleep(max(0.0, outage_ends - time.monotonic()))
    finally:
        if holder.stdin is not None:
            holder.stdin.write("\n")
            holder.stdin.close()
        holder.wait(10)
    wait_for(lambda: _ended_with_real_codes(home), what="the tasks' real ends to be recorded")
    found = tasks(home, "pair")
    assert found["good"]["exit_code"] == 0 and found["bad"]["exit_code"] == 7
    err = daemon.stderr()
    assert err.count("cannot write to the database") == 1, err
    assert "writing to" in err and "again after" in err, err
    row = wait_for(lambda: (lambda r: r if r and r[2] else None)(
        _daemon_row(home, daemon.proc.pid)), what="the runner's health to be recorded")
    assert row[1] == "ok" and "locked by another process" in row[2]
    _check_outage_alert(home)
    assert daemon.proc.poll() is None


def _check_outage_alert(home: Path) -> None:
    """The outage outlasted ``alert_after``: an error alert about the runner (no DAG) says how
    long it could not write and why."""
    conn = sqlite3.connect(home / "flowtui.db")
    try:
        row = wait_for(lambda: conn.execute(
            "SELECT dag_id, severity, state, summary FROM alerts WHERE kind = "
            "'runner_degraded'").fetchone(), what="an alert about the outage")
    finally:
        conn.close()
    assert row[:3] == ("", "error", "open"), row
    assert "could not write to" in row[3] and "locked by another process" in row[3], row


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 4 MB tmpfs: a real file system that fills up."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up ({done.stderr.strip()}); needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError:
            pass
        try:
            while True:  # the last few blocks too
                fh.write(b"\0" * 512)
        except OSError:
            pass
    return filler


def test_a_full_disk_is_waited_out_and_exit_codes_are_kept(small_disk: Path, pipelines: Path,
                                                          daemons: list) -> None:
    home = small_disk / "home"
    home.mkdir()
    _two_tasks(pipelines)
    daemon = QuickDaemon(home, pipelines)
    daemons.append(daemon)
    trigger(home, pipelines, "pair")
    pids = wait_for(lambda: _running_pids(home), what="both tasks running")
    filler = _fill(small_disk)
    (pipelines.parent / "go").touch()
    wait_for(lambda: not any(alive(pid) for pid in pids.values()), what="the tasks to end")
    try:
        wait_for(lambda: "disk holding the database is full" in daemon.stderr(),
                 what="the runner to report the full disk")
    except AssertionError:
        os.system(f"ls -la {home} {small_disk}; df {small_disk}")
        print(daemon.stderr())
        raise
    result = flowtui("trigger", "pair", home=home, pipelines=pipelines)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "full" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert daemon.proc.poll() is None, daemon.stderr()
    os.unlink(filler)
    wait_for(lambda: _ended_with_real_codes(home), what="the tasks' real ends to be recorded")
    found = tasks(home, "pair")
    assert found["good"]["exit_code"] == 0 and found["bad"]["exit_code"] == 7
    assert "zombie" not in (found["good"]["reason"] + found["bad"]["reason"])
    assert daemon.stderr().count("cannot write to the database") == 1, daemon.stderr()
    assert daemon.proc.poll() is None
