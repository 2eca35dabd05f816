"""Several hosts (SPEC 10): 1,000 `true` tasks (100 daily runs of extract -> 8 -> load) over
three runners on PostgreSQL against one runner on SQLite and the bare spawn floor, in one run;
and how soon a run queued from another host starts (LISTEN/NOTIFY) against the same on SQLite
(a signal). Starts its own PostgreSQL server as the tests do.

    python -m bench.hosts_bench [--write docs/benchmarks.md]
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

from bench import compiled, machine, markdown_table, write_section
from bench.run import FLOWTUI, ROOT, floor_pool

sys.path.insert(0, str(ROOT / "tests"))
import pg_support  # noqa: E402  (the tests' server: initdb and pg_ctl on 127.0.0.1)

DAYS = 100
WORK = """dag_id: work
schedule: '@daily'
start_date: {start}
catchup: true
max_active_runs: 8
tasks:
  extract: {{command: 'true'}}
{middle}
  load: {{command: 'true', deps: [{deps}]}}
"""
ONE = """dag_id: one
tasks:
  go: {command: 'true'}
"""
# A task's end on one host, its downstream on another: b is in a queue only the second runner
# serves, a and c in the queue only the first (the run's owner) serves.
PINGPONG = """dag_id: pingpong
tasks:
  a: {command: 'true'}
  b: {command: 'true', queue: other, deps: [a]}
  c: {command: 'true', deps: [b]}
"""


def pipelines(folder: Path) -> Path:
    folder.mkdir()
    start = (dt.date.today() - dt.timedelta(days=DAYS)).isoformat()
    middle = "\n".join(f"  t{i}: {{command: 'true', deps: [extract]}}" for i in range(8))
    (folder / "work.yaml").write_text(WORK.format(start=start, middle=middle,
                                                   deps=", ".join(f"t{i}" for i in range(8))))
    (folder / "one.yaml").write_text(ONE)
    return folder


def runner(home: Path, pipes: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    home.mkdir(exist_ok=True)
    (home / "flowtui.toml").write_text("parallelism = 8\n")
    return subprocess.Popen([*FLOWTUI, "--home", str(home), "--pipelines", str(pipes), "runner",
                             *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            cwd=ROOT, start_new_session=True)


def count(database: str | Path, sql: str) -> int:
    if isinstance(database, Path):
        if not database.exists():
            return 0
        conn = sqlite3.connect(database)
        try:
            return conn.execute(sql).fetchone()[0]
        except sqlite3.Error:
            return 0
        finally:
            conn.close()
    import psycopg

    try:
        with psycopg.connect(database) as conn:
            return conn.execute(sql).fetchone()[0]
    except psycopg.Error:
        return 0


def wait(database: str | Path, sql: str, want: int, timeout: float = 600) -> float:
    deadline = time.monotonic() + timeout
    while count(database, sql) < want:
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {sql} < {want}")
        time.sleep(0.01)
    return time.perf_counter()


def thousand_tasks(tmp: Path, pipes: Path, url: str | None, hosts: int) -> float:
    """Runners started together; seconds until the 100 runs succeeded."""
    env = dict(os.environ)
    if url:
        env["FLOWTUI_DATABASE_URL"] = url
    database: str | Path = url or tmp / f"h{hosts}-0" / "flowtui.db"
    started = time.perf_counter()
    procs = [runner(tmp / f"h{hosts}-{i}", pipes, {**env, "FLOWTUI_HOSTNAME": f"bench-{i}"})
             for i in range(hosts)]
    try:
        done = wait(database, "SELECT count(*) FROM dag_runs WHERE state = 'success' AND "
                              "dag_id = 'work'", DAYS)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(30)
    return done - started


def queued_to_started(tmp: Path, pipes: Path, url: str | None, rounds: int) -> list[float]:
    """A run triggered from another host (the CLI with another $FLOWTUI_HOSTNAME): seconds
    from the run's creation to its task's start on the runner's host."""
    env = dict(os.environ)
    if url:
        env["FLOWTUI_DATABASE_URL"] = url
    home = tmp / ("lat-pg" if url else "lat-lite")
    proc = runner(home, pipes, {**env, "FLOWTUI_HOSTNAME": "runner-host"})
    database: str | Path = url or home / "flowtui.db"
    try:
        wait(database, "SELECT count(*) FROM runners WHERE stopped_at IS NULL", 1, 30)
        for n in range(1, rounds + 1):
            subprocess.run([*FLOWTUI, "--home", str(home), "--pipelines", str(pipes),
                            "trigger", "one"], check=True, capture_output=True, cwd=ROOT,
                           env={**env, "FLOWTUI_HOSTNAME": "laptop"})
            wait(database, "SELECT count(*) FROM tries t JOIN dag_runs r ON r.id = t.run_pk "
                           "WHERE r.dag_id = 'one'", n, 30)
        sql = ("SELECT t.start_date - r.created_at FROM tries t JOIN dag_runs r ON "
               "r.id = t.run_pk WHERE r.dag_id = 'one'")
        if isinstance(database, Path):
            conn = sqlite3.connect(database)
            rows = conn.execute(sql).fetchall()
            conn.close()
        else:
            import psycopg

            with psycopg.connect(database) as conn:
                rows = conn.execute(sql).fetchall()
        return [float(r[0]) for r in rows]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def task_to_task(tmp: Path, pipes: Path, url: str, rounds: int
                 ) -> tuple[list[float], list[float]]:
    """Two runners on two "hosts", each serving one queue: for each of ``rounds`` runs of
    a -> b -> c, seconds from a's end (as its runner recorded it) to b's try started on the
    other host (claimed, its process spawned right after), and from b's end there (as that
    runner wrote it) to c's start back on the run's owner."""
    env = {**os.environ, "FLOWTUI_DATABASE_URL": url}
    procs = [runner(tmp / "pp-a", pipes, {**env, "FLOWTUI_HOSTNAME": "host-a"},
                    "--queues", "default"),
             runner(tmp / "pp-b", pipes, {**env, "FLOWTUI_HOSTNAME": "host-b"},
                    "--queues", "other")]
    try:
        wait(url, "SELECT count(*) FROM runners WHERE stopped_at IS NULL", 2, 30)
        for n in range(1, rounds + 1):
            subprocess.run([*FLOWTUI, "--home", str(tmp / "pp-a"), "--pipelines", str(pipes),
                            "trigger", "pingpong"], check=True, capture_output=True, cwd=ROOT,
                           env={**env, "FLOWTUI_HOSTNAME": "laptop"})
            wait(url, "SELECT count(*) FROM dag_runs WHERE dag_id = 'pingpong' AND "
                      "state = 'success'", n, 30)
        import psycopg

        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT b.start_date - a.end_date, c.start_date - b.exited_at FROM tries a "
                "JOIN tries b ON b.run_pk = a.run_pk AND b.task_id = 'b' JOIN tries c ON "
                "c.run_pk = a.run_pk AND c.task_id = 'c' WHERE a.task_id = 'a'").fetchall()
        return [float(r[0]) for r in rows], [float(r[1]) for r in rows]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(30)


def main() -> int:
    compiled()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", help="write the results as markdown to this file")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-only", action="store_true",
                        help="measure only the hand-off (prints, writes nothing)")
    args = parser.parse_args()
    bin_dir = pg_support.binaries()
    if bin_dir is None:
        raise SystemExit("PostgreSQL is not installed here (apt-get install postgresql)")
    with tempfile.TemporaryDirectory(prefix="flowtui-hosts-") as name:
        tmp = Path(name)
        os.chmod(tmp, 0o755)
        server = pg_support.start(tmp / "pg", bin_dir)
        try:
            pipes = pipelines(tmp / "pipes")
            lite, pg, floor = [], [], []
            for r in range(0 if args.latency_only else args.rounds):
                floor.append(floor_pool(DAYS * 10, 8))
                (tmp / f"r{r}").mkdir()
                lite.append(thousand_tasks(tmp / f"r{r}", pipes, None, 1))
                pg.append(thousand_tasks(tmp / f"r{r}", pipes, pg_support.new_database(server),
                                         3))
                print(f"round {r + 1}: floor {floor[-1]:.2f} s, sqlite x1 {lite[-1]:.2f} s, "
                      f"postgresql x3 {pg[-1]:.2f} s", file=sys.stderr)
            # The hand-off on a runner with nothing else to do: only the one-task DAG (the
            # work DAG's catch-up would still be running on the SQLite runner otherwise).
            alone = tmp / "pipes-one"
            alone.mkdir()
            (alone / "one.yaml").write_text(ONE)
            lat_lite = queued_to_started(tmp, alone, None, 20)
            lat_pg = queued_to_started(tmp, alone, pg_support.new_database(server), 20)
            pong = tmp / "pipes-pingpong"
            pong.mkdir()
            (pong / "pingpong.yaml").write_text(PINGPONG)
            there, back = task_to_task(tmp, pong, pg_support.new_database(server), 20)
        finally:
            pg_support.stop_folder(tmp / "pg", bin_dir)
    med = statistics.median
    if args.latency_only:
        print(f"hand-off SQLite median {med(lat_lite) * 1000:.1f} ms, PostgreSQL median "
              f"{med(lat_pg) * 1000:.1f} ms (max {max(lat_pg) * 1000:.1f}); task to task "
              f"across hosts {med(there) * 1000:.1f} ms there, {med(back) * 1000:.1f} ms back")
        return 0
    table = markdown_table([
        ("the floor: 1,000 `true` through an 8-thread `subprocess.run` pool",
         f"{med(floor):.2f} s", "1.00x"),
        ("one runner on SQLite (parallelism 8), 100 runs x 10 tasks",
         f"{med(lite):.2f} s", f"{med(lite) / med(floor):.2f}x"),
        ("three runners on PostgreSQL (parallelism 8 each), the same 100 runs",
         f"{med(pg):.2f} s", f"{med(pg) / med(floor):.2f}x"),
        ("a run triggered from another host → its task started, SQLite (a signal), median of "
         "20", f"{med(lat_lite) * 1000:.1f} ms", ""),
        ("the same across hosts on PostgreSQL (NOTIFY), median of 20",
         f"{med(lat_pg) * 1000:.1f} ms (max {max(lat_pg) * 1000:.1f})", "goal <= 10 ms"),
        ("a task's end on its run's runner → its downstream started on another host, median "
         "of 20", f"{med(there) * 1000:.1f} ms (max {max(there) * 1000:.1f})", "goal <= 10 ms"),
        ("that task's end there → its downstream started back on the run's runner, median "
         "of 20", f"{med(back) * 1000:.1f} ms (max {max(back) * 1000:.1f})", "goal <= 10 ms"),
    ], ("measure", "median", "vs the floor"))
    print(table)
    if args.write:
        text = (f"Measured {dt.date.today().isoformat()} on {machine()}.\n\n"
                f"Command: `python -m bench.hosts_bench --write docs/benchmarks.md` "
                f"({args.rounds} rounds, alternating; medians). The three \"hosts\" are three "
                "`flowtui runner` processes with their own homes and `$FLOWTUI_HOSTNAME` on this "
                "2-core machine and one PostgreSQL server started by the bench (fsync off, as "
                "in the tests), so the figure measures coordination, not more cores: a run's "
                "runner starts what its slots allow and offers the rest, which any runner "
                "claims (SKIP LOCKED). Runs are timed "
                "from the runners' start (their start-up and the catch-up of 100 runs "
                "included) to the 100th run's success. The hand-off is timed from a run's "
                "creation by `flowtui trigger` to its task's start, on a runner with only that "
                "one-task DAG to look after. Task to task: two runners serving one queue each, "
                "runs of a -> b -> c with b in the second's queue, from the recorded times of "
                "the tries (an end as its runner recorded it; a start as the try's row "
                "committed just before its process is spawned).\n\n" + table)
        write_section(args.write, "Several hosts", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
