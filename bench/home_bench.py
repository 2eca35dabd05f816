"""A home after a year: 1,000 DAGs x 365 daily runs x 27 tasks (9,855,000 task instances,
written in bulk), and what an operator waits for on it: `runs list`, `tasks list`, the TUI's
first paint and key to repaint.

    python -m bench.home_bench [--dags 1000] [--runs 365] [--tasks 27] [--write docs/benchmarks.md]
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import compiled, machine, markdown_table, write_section
from bench.run import FLOWTUI, ROOT
from bench.tui_bench import build_home, first_paint, key_to_repaint


def command(home: Path, pipes: Path, *args: str, rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        subprocess.run([*FLOWTUI, "--home", str(home), "--pipelines", str(pipes), *args],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    compiled()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dags", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=365)
    parser.add_argument("--tasks", type=int, default=27)
    parser.add_argument("--write")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flowtui-home-") as tmp:
        home, pipes = Path(tmp) / "home", Path(tmp) / "pipes"
        started = time.perf_counter()
        db = build_home(home, pipes, args.dags, args.runs, args.tasks)
        built = time.perf_counter() - started
        size = db.stat().st_size
        print(f"built {size / 2**30:.1f} GB in {built:.0f} s", file=sys.stderr)
        runs_list = command(home, pipes, "runs", "list")
        runs_dag = command(home, pipes, "runs", "list", "dag500")
        tasks_list = command(home, pipes, "tasks", "list", "dag500", "latest")
        baseline = command(home, pipes, "--version")
        paints = [first_paint(home, pipes) for _ in range(3)]
        times, rss = asyncio.run(key_to_repaint(home, pipes, 20))
    total = args.dags * args.runs * args.tasks
    ms = lambda s: f"{s * 1000:.0f} ms"  # noqa: E731
    table = markdown_table([
        ("`flowtui runs list` (the newest runs of every DAG), median of 5", ms(runs_list), ""),
        ("`flowtui runs list dag500`", ms(runs_dag), ""),
        ("`flowtui tasks list dag500 latest`", ms(tasks_list), ""),
        ("`flowtui --version` (the interpreter and imports: what any command pays)",
         ms(baseline), ""),
        ("TUI first paint of the DAGs screen from process start (median of 3)",
         f"{statistics.median(paints):.2f} s", "<= 1.0 s"),
        ("TUI key press to repainted screen (median of 20)",
         f"{statistics.median(times) * 1000:.0f} ms (max {max(times) * 1000:.0f} ms)",
         "<= 50 ms"),
        ("TUI resident memory (peak)", f"{rss:.0f} MB", "<= 200 MB"),
    ], ("measure", "flowtui", "target"))
    print(table)
    if args.write:
        text = (f"Measured {dt.date.today().isoformat()} on {machine()}.\n\n"
                f"Command: `python -m bench.home_bench`: {args.dags:,} DAGs x {args.runs} daily "
                f"runs x {args.tasks} tasks = {total:,} task instances (a chain of {args.tasks} "
                f"`true` tasks per DAG, one failed run in ~97), written in bulk into one SQLite "
                f"file of {size / 2**30:.1f} GB ({built:.0f} s), with the DAG files beside it. The "
                "TUI figures are measured as in \"Terminal UI\" above, on this home.\n\n" + table)
        write_section(args.write, "A home after a year", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
