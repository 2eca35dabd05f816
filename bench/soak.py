"""A long-lived home: 20 DAGs on ``* * * * *`` under a real runner for 10 minutes, once without
retention and once with it, side by side; the database's size, the logs' size, the runs kept
and the runner's resident memory sampled as they go.

    python -m bench.soak [--minutes 10] [--dags 20] [--retention 3m] [--write docs/benchmarks.md]

Both runners run at once (two homes), so each figure is read at the same moments; what is
compared is size and memory, which the other runner's CPU does not change.
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

from bench import compiled, machine, markdown_table, write_section
from bench.run import FLOWTUI, ROOT

DAG = """dag_id: minutely_{i:02d}
schedule: "* * * * *"
start_date: {today}
catchup: false
tasks:
  extract: {{command: 'seq 1 2000'}}
  transform: {{command: 'seq 1 2000', deps: [extract]}}
  load: {{command: 'seq 1 2000', deps: [transform]}}
  check: {{command: 'echo ok', deps: [load]}}
"""


def folder_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def runs_kept(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute("SELECT count(*) FROM dag_runs").fetchone()[0]
    finally:
        conn.close()


def main() -> int:
    compiled()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--dags", type=int, default=20)
    parser.add_argument("--retention", default="3m")
    parser.add_argument("--write", help="write the results as markdown to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flowtui-soak-") as tmp:
        base = Path(tmp)
        pipes = base / "pipes"
        pipes.mkdir()
        today = dt.date.today().isoformat()
        for i in range(args.dags):
            (pipes / f"minutely_{i:02d}.yaml").write_text(DAG.format(i=i, today=today))
        homes = {"without retention": base / "plain", f"retention = \"{args.retention}\"":
                 base / "kept"}
        procs = {}
        for label, home in homes.items():
            home.mkdir()
            if "retention =" in label:
                (home / "flowtui.toml").write_text(f'retention = "{args.retention}"\n')
            procs[label] = subprocess.Popen(
                [*FLOWTUI, "--home", str(home), "--pipelines", str(pipes), "runner"],
                stdout=subprocess.DEVNULL, stderr=(home / "runner.err").open("w"), cwd=ROOT,
                start_new_session=True)
        samples: dict[str, list[tuple[float, int, int, int, int]]] = {k: [] for k in homes}
        started = time.monotonic()
        end = started + args.minutes * 60
        try:
            while time.monotonic() < end:
                time.sleep(15)
                at = time.monotonic() - started
                for label, home in homes.items():
                    db = sum(p.stat().st_size for p in home.glob("flowtui.db*"))
                    samples[label].append((at, db, folder_bytes(home / "logs"),
                                           rss_bytes(procs[label].pid),
                                           runs_kept(home / "flowtui.db")))
                print(f"{at / 60:.1f} min: " + "; ".join(
                    f"{k}: {v[-1][1] / 1e6:.1f} MB db, {v[-1][4]} runs, "
                    f"{v[-1][3] / 1e6:.0f} MB RSS" for k, v in samples.items()),
                    file=sys.stderr, flush=True)
        finally:
            for proc in procs.values():
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)
    rows = []
    for label, points in samples.items():
        first = next(p for p in points if p[0] >= 60)  # a minute in: the runner settled
        half = min(points, key=lambda p: abs(p[0] - args.minutes * 30))
        last = points[-1]
        for name, index, unit in (("database (file and WAL)", 1, 1e6), ("logs", 2, 1e6),
                                  ("runner resident memory", 3, 1e6), ("runs kept", 4, None)):
            def shown(p: tuple, index: int = index, unit: float | None = unit) -> str:
                return str(p[index]) if unit is None else f"{p[index] / unit:.1f} MB"
            rows.append((label, name, shown(first), shown(half), shown(last)))
    table = markdown_table(rows, ("home", "measure", "after 1 min",
                                  f"after {args.minutes / 2:g} min",
                                  f"after {args.minutes:g} min"))
    print(table)
    if args.write:
        text = (f"Measured {dt.date.today().isoformat()} on {machine()}.\n\n"
                f"Command: `python -m bench.soak --minutes {args.minutes:g} --dags {args.dags} "
                f"--retention {args.retention}`: {args.dags} DAGs scheduled `* * * * *` (four "
                "chained tasks, three of them writing 2,000 log lines), a real `flowtui runner` "
                "on the real clock for each home, both at once; sizes and the runner's resident "
                "memory sampled every 15 s. With retention set, the runner cleans every tenth "
                "of the retention (at least a minute apart; daily for ten days or more). "
                "SQLite does not give freed pages back to the file system: it reuses them, so "
                "the file stops growing once the cleans keep pace, rather than shrinking.\n\n"
                + table)
        write_section(args.write, "A long-lived home (soak)", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
