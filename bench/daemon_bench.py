"""The daemon with many DAGs on a schedule: 1,000 DAGs on `*/5 * * * *` (one `true` task each),
a real `flowtui runner` on a real clock for a window that holds at least one fire. Reported: the
runner's CPU and wake-ups (voluntary context switches, from /proc) per hour idle, and what one
fire of 1,000 runs costs and takes.

    python -m bench.daemon_bench [--dags 1000] [--minutes 6] [--write docs/benchmarks.md]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import compiled, cpu_seconds, machine, markdown_table, write_section
from bench.run import FLOWTUI, ROOT


def switches(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("voluntary_ctxt_switches"):
                return int(line.split()[1])
    return 0


def runs_done(db: Path) -> tuple[int, float | None]:
    try:
        conn = sqlite3.connect(db)
        try:
            count, last = conn.execute("SELECT count(*), max(end_date) FROM dag_runs WHERE "
                                       "state = 'success'").fetchone()
        finally:
            conn.close()
        return count, last
    except sqlite3.Error:
        return 0, None


def main() -> int:
    compiled()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dags", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--write", help="write the results as markdown to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flowtui-daemon-") as name:
        home, pipes = Path(name) / "home", Path(name) / "pipes"
        home.mkdir()
        pipes.mkdir()
        (home / "flowtui.toml").write_text("parallelism = 8\n")
        for d in range(args.dags):
            (pipes / f"d{d:04d}.yaml").write_text(
                f"dag_id: d{d:04d}\nschedule: '*/5 * * * *'\ncatchup: false\n"
                "tasks:\n  t: {command: 'true'}\n")
        proc = subprocess.Popen([*FLOWTUI, "--home", str(home), "--pipelines", str(pipes),
                                 "runner"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                cwd=ROOT)
        db = home / "flowtui.db"
        samples: list[tuple[float, float, int, int]] = []  # wall, cpu, switches, runs done
        end = time.time() + args.minutes * 60
        try:
            while time.time() < end:
                count, _ = runs_done(db)
                samples.append((time.time(), cpu_seconds(proc.pid), switches(proc.pid), count))
                time.sleep(1.0)
            finals = runs_done(db)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    # Idle stretches: consecutive samples with no run finishing and not within 20 s of a fire.
    idle_cpu = idle_sw = idle_wall = 0.0
    fires = []
    for a, b in zip(samples, samples[1:]):
        if a[3] != b[3]:
            fires.append((a, b))
            continue
        minute = dt.datetime.fromtimestamp(b[0])
        near = (minute.minute % 5 == 0 and minute.second < 30) or (
            minute.minute % 5 == 4 and minute.second > 55)
        if not near and b[3] == a[3]:
            idle_cpu += b[1] - a[1]
            idle_sw += b[2] - a[2]
            idle_wall += b[0] - a[0]
    first = samples[0]
    rows = []
    if idle_wall:
        rows.append(("runner CPU while idle between fires", f"{idle_cpu / idle_wall * 3600:.1f} "
                     f"s an hour ({idle_cpu / idle_wall * 100:.2f}% of a core)"))
        rows.append(("wake-ups while idle (voluntary context switches)",
                     f"{idle_sw / idle_wall * 3600:,.0f} an hour"))
    runs = finals[0]
    fire_cpu = samples[-1][1] - first[1] - idle_cpu
    rows.append((f"runs created and run in the window ({args.minutes:g} min)", f"{runs:,}"))
    bursts: list[list[tuple]] = []  # runs finishing, split where 10 s passed without any
    for a, b in fires:
        if bursts and a[0] - bursts[-1][-1][1][0] <= 10:
            bursts[-1].append((a, b))
        else:
            bursts.append([(a, b)])
    if bursts:
        took = sorted(burst[-1][1][0] - burst[0][0][0] for burst in bursts)
        rows.append((f"one fire of {args.dags:,} runs: first run done to last (each fire; "
                     "1 s samples)", ", ".join(f"{t:.0f} s" for t in took)))
    if fires:
        rows.append(("runner CPU for the fires and start-up in the window",
                     f"{fire_cpu:.1f} s ({fire_cpu / max(runs, 1) * 1000:.1f} ms a run)"))
    table = markdown_table(rows, ("measure", "flowtui"))
    print(table)
    if args.write:
        text = (f"Measured {dt.date.today().isoformat()} on {machine()}.\n\n"
                f"Command: `python -m bench.daemon_bench --dags {args.dags} --minutes "
                f"{args.minutes:g}`: a real `flowtui runner` on the real clock with {args.dags:,} "
                "DAGs scheduled `*/5 * * * *` (one `true` task each, no catch-up) on SQLite; "
                "its CPU time and voluntary context switches are read from /proc every second. "
                "Idle is every second not within 30 s after or 5 s before a fire.\n\n" + table)
        write_section(args.write, "The daemon with many DAGs", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
