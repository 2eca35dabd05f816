"""Benchmarks of the TUI on a big home: first paint, key to repaint, memory, huge log, idle CPU.

    python -m bench.tui_bench [--dags 200 --runs 365 --tasks 20] [--write docs/benchmarks.md]
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import compiled, cpu_seconds, machine, markdown_table, write_section

ROOT = Path(__file__).resolve().parent.parent


def build_home(home: Path, pipes: Path, dags: int, runs: int, tasks: int) -> Path:
    """A store with dags x runs x tasks task instances (written in bulk), and their DAG files."""
    from flowtui.store import Store

    home.mkdir(parents=True)
    pipes.mkdir(parents=True)
    for d in range(dags):
        lines = [f"dag_id: dag{d:03d}", "schedule: '@daily'", "start_date: 2025-01-01", "tasks:"]
        lines += [f"  t{t:02d}: {{command: 'true'{', deps: [t' + format(t - 1, '02d') + ']' if t else ''}}}"
                  for t in range(tasks)]
        (pipes / f"dag{d:03d}.yaml").write_text("\n".join(lines) + "\n")
    store = Store.open(home / "flowtui.db")
    store.close()
    conn = sqlite3.connect(home / "flowtui.db")
    conn.execute("PRAGMA synchronous = OFF")
    base = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc).timestamp()
    now = time.time()
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO dags (dag_id, fileloc, schedule, timezone, task_count, last_parsed_at, "
        "updated_at) VALUES (?, ?, '@daily', 'UTC', ?, ?, ?)",
        [(f"dag{d:03d}", str(pipes / f"dag{d:03d}.yaml"), tasks, now, now) for d in range(dags)])
    run_pk = 0
    for d in range(dags):
        run_rows, ti_rows = [], []
        for r in range(runs):
            run_pk += 1
            logical = base + r * 86400
            state = "failed" if (d * 7 + r) % 97 == 0 else "success"
            run_id = f"scheduled__{dt.datetime.fromtimestamp(logical, dt.timezone.utc).isoformat()}"
            run_rows.append((run_pk, f"dag{d:03d}", run_id, logical, logical, logical + 86400,
                             state, logical + 86400, logical + 86400 + 60, logical, logical))
            for t in range(tasks):
                ti_state = "failed" if state == "failed" and t == tasks - 1 else "success"
                ti_rows.append((run_pk, f"dag{d:03d}", run_id, f"t{t:02d}", ti_state, 1, 1,
                                logical + 86400 + t * 3, logical + 86400 + t * 3 + 2,
                                1 if ti_state == "failed" else 0,
                                "exited 1" if ti_state == "failed" else "",
                                logical + 86400 + t * 3 + 2))
        conn.executemany(
            "INSERT INTO dag_runs (id, dag_id, run_id, run_type, logical_date, data_interval_start, "
            "data_interval_end, state, start_date, end_date, created_at, updated_at) "
            "VALUES (?, ?, ?, 'scheduled', ?, ?, ?, ?, ?, ?, ?, ?)", run_rows)
        conn.executemany(
            "INSERT INTO task_instances (run_pk, dag_id, run_id, task_id, state, try_number, "
            "max_tries, start_date, end_date, exit_code, reason, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", ti_rows)
    # A little recent history for the Now screen.
    conn.execute("UPDATE task_instances SET updated_at = ? WHERE state = 'failed' AND run_pk IN "
                 "(SELECT id FROM dag_runs ORDER BY id DESC LIMIT 400)", (now - 600,))
    conn.execute("INSERT INTO events (at, kind, dag_id, run_id, new_state, cause) VALUES "
                 "(?, 'run', 'dag000', 'x', 'success', 'scheduler')", (now,))
    conn.execute("COMMIT")
    conn.close()
    return home / "flowtui.db"


async def key_to_repaint(home: Path, pipes: Path, presses: int) -> tuple[list[float], float]:
    from flowtui.app.app import make_app
    from flowtui.runner.config import load_config

    app = make_app(load_config(home, pipes), refresh_seconds=3600)
    times: list[float] = []
    async with app.run_test(size=(160, 48)) as pilot:
        while app.first_paint_at is None:
            await pilot.pause(0.01)
        keys = ["1", "0", "2", "5"] * (presses // 4 + 1)
        for key in keys[:presses]:
            before = app.first_paint_at
            app.first_paint_at = None
            started = time.perf_counter()
            await pilot.press(key)
            while app.first_paint_at is None:
                await pilot.pause(0.002)
            times.append(app.first_paint_at - started)
            del before
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return times, rss


def first_paint(home: Path, pipes: Path) -> float:
    """From process start (the exec) to the DAGs screen painted with its rows."""
    code = ("import time,asyncio,sys\n"
            "from flowtui.app.app import make_app\nfrom flowtui.runner.config import load_config\n"
            "async def main():\n"
            "    app = make_app(load_config(sys.argv[1], sys.argv[2]), start_mode='dags', "
            "refresh_seconds=3600)\n"
            "    async with app.run_test(size=(160, 48)) as pilot:\n"
            "        while app.first_paint_at is None:\n"
            "            await pilot.pause(0.005)\n"
            "        print(time.time())\n"
            "asyncio.run(main())\n")
    start = time.time()
    out = subprocess.run([sys.executable, "-P", "-c", code, str(home), str(pipes)],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1]) - start


EXCERPT_DAG = """dag_id: crunch
tasks:
  transform:
    command: |
      echo "INFO config: on_error=abort"
      for i in $(seq 1 1000); do echo "INFO step $i ok rows=1000 errors=0"; done
      echo "ERROR psycopg.OperationalError: connection to 10.0.0.5:5432 refused"
      for i in $(seq 1 1000); do echo "INFO cleanup $i errors=0 0 failed"; done
      exit 3
"""


def launch_to_excerpt(tmp: Path) -> float:
    """From process start (the exec) to Now showing the newest failure's real error line in its
    detail pane, with no key pressed: what a paged engineer waits for."""
    home, pipes = tmp / "excerpt-home", tmp / "excerpt-pipes"
    pipes.mkdir(parents=True)
    (pipes / "crunch.yaml").write_text(EXCERPT_DAG)
    subprocess.run([sys.executable, "-P", "-m", "flowtui", "--home", str(home), "--pipelines",
                    str(pipes), "run", "crunch"], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, cwd=ROOT)
    code = ("import time,asyncio,sys\n"
            "from flowtui.app.app import make_app\nfrom flowtui.runner.config import load_config\n"
            "async def main():\n"
            "    app = make_app(load_config(sys.argv[1], sys.argv[2]), refresh_seconds=3600)\n"
            "    async with app.run_test(size=(80, 24)) as pilot:\n"
            "        while 'OperationalError' not in str(app.screen.query_one('#now-detail')"
            ".render()):\n"
            "            await pilot.pause(0.005)\n"
            "        print(time.time())\n"
            "asyncio.run(main())\n")
    times = []
    for _ in range(3):
        start = time.time()
        out = subprocess.run([sys.executable, "-P", "-c", code, str(home), str(pipes)],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        times.append(float(out.stdout.strip().splitlines()[-1]) - start)
    return statistics.median(times)


def open_huge_log(tmp: Path, size_gb: float) -> float:
    from flowtui.app.log_screen import read_tail

    path = tmp / "huge.log"
    line = b"2026-11-21 10:00:00 INFO processed batch 123456 of the nightly load, rows=50000\n"
    block = line * (8 * 1024 * 1024 // len(line))
    with open(path, "wb") as fh:
        for _ in range(max(1, -(-int(size_gb * 1e9) // len(block)))):
            fh.write(block)
    os.system("sync")
    times = []
    for _ in range(5):
        start = time.perf_counter()
        lines, size, _ = read_tail(str(path))
        times.append(time.perf_counter() - start)
    assert size > size_gb * 0.9e9 and lines
    path.unlink()
    return statistics.median(times)


HUGE_ERROR = "psycopg2.OperationalError: could not connect to server: Connection refused"


def log_keys_on_huge_log(tmp: Path, size_gb: float) -> tuple[float, float]:
    """``l`` then ``e`` through the real screens on a failed try whose log is ``size_gb`` GB of
    noise with decoys, the real error ~2,000 lines from its end: each key press to its result
    painted (the log's last line; the excerpt line in view)."""
    from flowtui.app.app import make_app
    from flowtui.app.log_screen import LogScreen
    from flowtui.app.log_view import LogView
    from flowtui.runner.config import load_config

    home, pipes = tmp / "log-home", tmp / "log-pipes"
    home.mkdir()
    pipes.mkdir()
    (pipes / "buried.yaml").write_text("dag_id: buried\ntasks:\n  load: {command: 'exit 1'}\n")
    flowtui = [sys.executable, "-P", "-m", "flowtui", "--home", str(home), "--pipelines",
               str(pipes)]
    subprocess.run([*flowtui, "run", "buried"], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, cwd=ROOT)
    conn = sqlite3.connect(home / "flowtui.db")
    (log_path,) = conn.execute("SELECT log_path FROM tries WHERE task_id = 'load'").fetchone()
    conn.close()
    noise = b"".join(b"2026-11-21 10:00:%02d INFO processed batch %d, rows=50000 errors=0\n"
                     % (i % 60, i) for i in range(1000))
    decoys = b"INFO config: on_error=abort retries=3\nINFO checks: 12 passed, 0 failed\n"
    block = (noise + decoys) * (8 * 1024 * 1024 // len(noise + decoys))
    with open(log_path, "wb") as fh:
        for _ in range(max(1, int(size_gb * 1e9) // len(block))):
            fh.write(block)
        fh.write(HUGE_ERROR.encode() + b"\n" + noise + noise + b"the last line\n")
    os.system("sync")

    async def measure() -> tuple[float, float]:
        app = make_app(load_config(home, pipes), refresh_seconds=3600)
        async with app.run_test(size=(160, 48)) as pilot:
            while app.first_paint_at is None:
                await pilot.pause(0.01)
            await pilot.pause(0.5)
            started = time.perf_counter()
            await pilot.press("l")
            while not (isinstance(app.screen, LogScreen) and app.screen.lines
                       and app.screen.lines[-1] == "the last line"):
                await pilot.pause(0.002)
            opened = time.perf_counter() - started
            log = app.screen.query_one(LogView)
            started = time.perf_counter()
            await pilot.press("e")
            while not any(HUGE_ERROR in strip.text for strip in
                          log.lines[int(log.scroll_y):int(log.scroll_y) + log.size.height]):
                await pilot.pause(0.002)
            return opened, time.perf_counter() - started

    try:
        return asyncio.run(measure())
    finally:
        Path(log_path).unlink()


def idle_cpu_watching(base: Path, count: int, seconds: float) -> float:
    """CPU of the app (headless, on the DAG screen) while a runner runs ``count`` tasks."""
    home, pipes = base / "watch-home", base / "watch-pipes"
    home.mkdir()
    pipes.mkdir()
    (home / "flowtui.toml").write_text(f"parallelism = {count}\n")
    lines = [f"dag_id: watched\nmax_active_tasks: {count}\ntasks:"]
    lines += [f"  t{i:03d}: {{command: 'sleep {seconds + 30}'}}" for i in range(count)]
    (pipes / "watched.yaml").write_text("\n".join(lines) + "\n")
    flowtui = [sys.executable, "-P", "-m", "flowtui", "--home", str(home), "--pipelines", str(pipes)]
    runner = subprocess.Popen([*flowtui, "runner"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        subprocess.run([*flowtui, "trigger", "watched"], check=True, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            conn = sqlite3.connect(home / "flowtui.db")
            running = conn.execute("SELECT count(*) FROM task_instances WHERE state = "
                                   "'running'").fetchone()[0]
            conn.close()
            if running == count:
                break
            time.sleep(0.2)
        code = ("import asyncio,sys\n"
                "from flowtui.app.app import make_app\n"
                "from flowtui.app.dag_screen import DagScreen\n"
                "from flowtui.runner.config import load_config\n"
                "async def main():\n"
                "    app = make_app(load_config(sys.argv[1], sys.argv[2]))\n"
                "    async with app.run_test(size=(160, 48)) as pilot:\n"
                "        await pilot.pause(1)\n"
                "        app.push_screen(DagScreen('watched'))\n"
                "        print('ready', flush=True)\n"
                "        await pilot.pause(float(sys.argv[3]))\n"
                "asyncio.run(main())\n")
        app = subprocess.Popen([sys.executable, "-P", "-c", code, str(home), str(pipes),
                                str(seconds + 5)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert app.stdout is not None
        app.stdout.readline()
        time.sleep(3)
        before, t0 = cpu_seconds(app.pid), time.monotonic()
        time.sleep(seconds)
        used = cpu_seconds(app.pid) - before
        elapsed = time.monotonic() - t0
        app.wait(60)
        return 100.0 * used / elapsed
    finally:
        runner.terminate()
        runner.wait(10)
        conn = sqlite3.connect(home / "flowtui.db")
        for (pid,) in conn.execute("SELECT pid FROM tries WHERE end_date IS NULL"):
            try:
                os.killpg(pid, 9)
            except OSError:
                pass
        conn.close()


def main() -> int:
    compiled()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dags", type=int, default=200)
    parser.add_argument("--runs", type=int, default=365)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--presses", type=int, default=20)
    parser.add_argument("--log-gb", type=float, default=1.0)
    parser.add_argument("--write")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flowtui-tbench-") as tmp:
        base = Path(tmp)
        home, pipes = base / "home", base / "pipes"
        t0 = time.perf_counter()
        db = build_home(home, pipes, args.dags, args.runs, args.tasks)
        print(f"built {db.stat().st_size / 1e6:.0f} MB store in {time.perf_counter() - t0:.0f}s",
              file=sys.stderr)
        paints = [first_paint(home, pipes) for _ in range(3)]
        excerpt = launch_to_excerpt(base)
        times, rss = asyncio.run(key_to_repaint(home, pipes, args.presses))
        log_open = open_huge_log(base, args.log_gb)
        log_l, log_e = log_keys_on_huge_log(base, args.log_gb)
        watching = idle_cpu_watching(base, 100, 30)
    total = args.dags * args.runs * args.tasks
    rows = [
        ("first paint of the DAGs screen from process start (median of 3)",
         f"{statistics.median(paints):.2f} s", "<= 1.0 s"),
        ("launch to the newest failure's error excerpt on screen, no key pressed, 80x24 "
         "(median of 3)", f"{excerpt:.2f} s", "<= 2.0 s"),
        (f"key press to repainted screen, {args.dags} DAGs x {args.runs} runs x {args.tasks} tasks "
         f"({total:,} task instances), median of {len(times)}",
         f"{statistics.median(times) * 1000:.0f} ms (max {max(times) * 1000:.0f} ms)", "<= 50 ms"),
        ("resident memory on that database (peak)", f"{rss:.0f} MB", "<= 200 MB"),
        (f"opening a {args.log_gb:g} GB log (the end of it on screen)",
         f"{log_open * 1000:.1f} ms", "<= 0.5 s"),
        (f"`l` on the failed task whose log is {args.log_gb:g} GB, key press to its last line "
         "painted", f"{log_l * 1000:.0f} ms", "<= 0.5 s"),
        ("then `e`, key press to the error line painted (~2,000 lines from the end)",
         f"{log_e * 1000:.0f} ms", "<= 0.5 s"),
        ("app CPU while idle on a DAG screen watching 100 running tasks (30 s)",
         f"{watching:.1f}% of a core", "<= 5%"),
    ]
    table = markdown_table(rows, ("measure", "flowtui", "target"))
    print(table)
    if args.write:
        write_section(args.write, "Terminal UI", (
            f"Measured {dt.date.today().isoformat()} on {machine()}.\n\n"
            "Command: `python -m bench.tui_bench`.\n\nThe app runs headless (Textual's "
            "`run_test`) at 160x48 on a store written in bulk. First paint is timed from the "
            "exec of a fresh interpreter to the DAGs screen "
            "showing its rows; key to repaint from the key press to the new screen showing "
            "its data after the next refresh (mode switches between Now, DAGs, runs and runner; a "
            "screen shown again re-reads the store only when its change counter moved, so the "
            "maximum is a screen's first visit, composing it and its rows). "
            "The first log figure is the viewer's read of the end of a file of that size; `l` "
            "and `e` go through the real screens (Now, then the log viewer) on a failed try whose log "
            "has that size, noise and decoys, its real error line ~2,000 lines from the end. "
            "Idle CPU "
            "is the app process (headless) on the grid of a DAG whose 100 tasks a real runner "
            "is running, refreshing as heartbeats land.\n\n"
            + table + "\n"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
