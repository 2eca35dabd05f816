"""Benchmarks of the runner daemon: idle CPU, retry latency, 500 running tasks, recovery.

    python -m bench.runner_bench [--idle-seconds 60] [--write docs/benchmarks-runner.md]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import compiled, cpu_seconds, machine, markdown_table, write_section

FLOWTUI = [sys.executable, "-P", "-m", "flowtui"]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Daemon:
    def __init__(self, home: Path, pipes: Path) -> None:
        self.home = home
        self.proc = subprocess.Popen([*FLOWTUI, "--home", str(home), "--pipelines", str(pipes),
                                      "runner"], stdout=subprocess.DEVNULL,
                                     stderr=open(home / "runner.err", "ab"))
        self.started = time.time()
        wait(lambda: self.query("SELECT count(*) FROM runners WHERE pid = ?", self.proc.pid)[0][0])

    def query(self, sql: str, *params: object) -> list[tuple]:
        try:
            conn = sqlite3.connect(self.home / "flowtui.db", timeout=30)
            rows = conn.execute(sql, params).fetchall()
            conn.close()
            return rows
        except sqlite3.OperationalError:
            return [(0,)]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(30)


def wait(check, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit("benchmark timed out waiting for a condition")
        time.sleep(0.02)


def flowtui(home: Path, pipes: Path, *args: str) -> None:
    subprocess.run([*FLOWTUI, "--home", str(home), "--pipelines", str(pipes), *args],
                   check=True, stdout=subprocess.DEVNULL)


def bench_idle(base: Path, seconds: float) -> float:
    home, pipes = base / "idle-home", base / "idle-pipes"
    home.mkdir()
    pipes.mkdir()
    for i in range(50):
        (pipes / f"d{i}.yaml").write_text(
            f"dag_id: d{i}\nschedule: '{i % 60} 3 * * *'\nstart_date: 2026-01-01\n"
            "tasks:\n  a: {command: 'true'}\n  b: {command: 'true', deps: [a]}\n")
    daemon = Daemon(home, pipes)
    wait(lambda: daemon.query("SELECT count(*) FROM dag_runs WHERE state = 'success'")[0][0] == 50)
    time.sleep(3)
    before, t0 = cpu_seconds(daemon.proc.pid), time.monotonic()
    time.sleep(seconds)
    used = cpu_seconds(daemon.proc.pid) - before
    elapsed = time.monotonic() - t0
    daemon.stop()
    return 100.0 * used / elapsed


def bench_retry_latency(base: Path, count: int) -> list[float]:
    home, pipes = base / "retry-home", base / "retry-pipes"
    home.mkdir()
    pipes.mkdir()
    lines = ["dag_id: r", "max_active_tasks: 64", "tasks:"]
    for i in range(count):
        lines.append(f"  t{i}: {{command: '[ \"$FLOWTUI_TRY_NUMBER\" -ge 2 ]', retries: 1, "
                     "retry_delay: 1h}")
    (pipes / "r.yaml").write_text("\n".join(lines) + "\n")
    daemon = Daemon(home, pipes)
    flowtui(home, pipes, "trigger", "r")
    wait(lambda: daemon.query("SELECT count(*) FROM task_instances WHERE state = "
                              "'up_for_retry'")[0][0] == count)
    latencies = []
    for i in range(count):
        flowtui(home, pipes, "retry", "r", "latest", f"t{i}")
        wait(lambda: daemon.query("SELECT count(*) FROM tries WHERE task_id = ? AND "
                                  "try_number = 2", f"t{i}")[0][0] == 1)
        asked = daemon.query("SELECT at FROM requests ORDER BY id DESC LIMIT 1")[0][0]
        started = daemon.query("SELECT start_date FROM tries WHERE task_id = ? AND "
                               "try_number = 2", f"t{i}")[0][0]
        latencies.append(started - asked)
    daemon.stop()
    return latencies


def bench_many_running(base: Path, count: int, seconds: float) -> dict[str, float]:
    home, pipes = base / "many-home", base / "many-pipes"
    home.mkdir()
    pipes.mkdir()
    (home / "flowtui.toml").write_text(f"parallelism = {count}\n")
    lines = [f"dag_id: many\nmax_active_tasks: {count}\ntasks:"]
    lines += [f"  t{i}: {{command: 'sleep {seconds}'}}" for i in range(count)]
    (pipes / "many.yaml").write_text("\n".join(lines) + "\n")
    daemon = Daemon(home, pipes)
    flowtui(home, pipes, "trigger", "many")
    wait(lambda: daemon.query("SELECT count(*) FROM task_instances WHERE state = "
                              "'running'")[0][0] == count)
    started = time.monotonic()
    cpu0 = cpu_seconds(daemon.proc.pid)
    worst_age, peak_rss = 0.0, 0.0
    while time.monotonic() - started < seconds - 5:
        rows = daemon.query("SELECT max(? - heartbeat_at) FROM tries WHERE end_date IS NULL",
                            time.time())
        worst_age = max(worst_age, rows[0][0] or 0.0)
        peak_rss = max(peak_rss, rss_mb(daemon.proc.pid))
        time.sleep(0.5)
    cpu = 100.0 * (cpu_seconds(daemon.proc.pid) - cpu0) / (time.monotonic() - started)
    wait(lambda: daemon.query("SELECT count(*) FROM dag_runs WHERE state = 'success'")[0][0] == 1)
    daemon.stop()
    return {"worst_heartbeat_age": worst_age, "cpu_percent": cpu, "peak_rss_mb": peak_rss}


def bench_recovery(base: Path, count: int) -> float:
    home, pipes = base / "rec-home", base / "rec-pipes"
    home.mkdir()
    pipes.mkdir()
    lines = [f"dag_id: rec\nmax_active_tasks: {count}\ntasks:"]
    lines += [f"  t{i}: {{command: 'sleep 20'}}" for i in range(count)]
    (pipes / "rec.yaml").write_text("\n".join(lines) + "\n")
    daemon = Daemon(home, pipes)
    flowtui(home, pipes, "trigger", "rec")
    wait(lambda: daemon.query("SELECT count(*) FROM tries WHERE pid IS NOT NULL")[0][0] == count)
    daemon.stop(signal.SIGKILL)
    first_runner = daemon.query("SELECT max(id) FROM runners")[0][0]
    restart = time.time()
    second = Daemon(home, pipes)
    wait(lambda: second.query("SELECT count(*) FROM tries WHERE runner_id > ? AND end_date IS "
                              "NULL", first_runner)[0][0] == count)
    took = time.time() - restart
    second.stop()
    for pid, in second.query("SELECT pid FROM tries"):
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
    return took


def main() -> int:
    compiled()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--many", type=int, default=500)
    parser.add_argument("--write")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flowtui-rbench-") as tmp:
        base = Path(tmp)
        recoveries = [bench_recovery(base / f"r{i}", 20) for i in range(3) if
                      (base / f"r{i}").mkdir() is None]
        print("recovery done", file=sys.stderr)
        latencies = bench_retry_latency(base, 20)
        print("retry done", file=sys.stderr)
        many = bench_many_running(base, args.many, 30)
        print("many done", file=sys.stderr)
        idle = bench_idle(base, args.idle_seconds)
    rows = [
        (f"daemon CPU while idle, 50 scheduled DAGs, {args.idle_seconds:g} s",
         f"{idle:.2f}% of a core", "<= 0.5%"),
        ("operator `retry` to the task's start, median of 20",
         f"{statistics.median(latencies) * 1000:.1f} ms (max {max(latencies) * 1000:.1f} ms)",
         "<= 50 ms"),
        (f"{args.many} tasks running `sleep 30`: oldest heartbeat seen",
         f"{many['worst_heartbeat_age']:.1f} s (interval 5 s)", "< 10 s"),
        (f"{args.many} tasks running: daemon CPU", f"{many['cpu_percent']:.1f}% of a core",
         "<= 25%"),
        (f"{args.many} tasks running: daemon memory (peak RSS)", f"{many['peak_rss_mb']:.0f} MB",
         "<= 200 MB"),
        ("recovery after `kill -9` (restart to all 20 orphans adopted), median of 3",
         f"{statistics.median(recoveries):.2f} s", "<= 1 s + staleness (0 s on one host)"),
    ]
    table = markdown_table(rows, ("measure", "flowtui", "target"))
    print(table)
    if args.write:
        write_section(args.write, "Runner daemon", (
            f"Measured {dt.date.today().isoformat()} on {machine()}.\n\n"
            f"Command: `python -m bench.runner_bench --idle-seconds {args.idle_seconds:g}`.\n\n"
            "A real `flowtui runner` process on a fresh home; CPU from /proc (user + system "
            "time over wall time), heartbeat ages from the store. Retry latency runs from the "
            "moment the `flowtui retry` command commits its request to the start of the new "
            "try. Recovery is timed from the restart of a `kill -9`ed daemon to the moment "
            "every orphaned running try is recorded as adopted; a dead runner on the same host "
            "is recognised at once from its pid and start time, so no staleness wait applies "
            "(a runner on another host would be declared dead after 15 s without a "
            "heartbeat).\n\n" + table + "\n"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
