"""Several hosts on one PostgreSQL database (SPEC 10): real `flowtui runner` processes, each
with its own home (its flowtui.toml and logs, as on its own machine) and its own
$FLOWTUI_HOSTNAME, sharing the pipelines and a real server (tests/pg_support.py). Every task
appends a line to one file, so "exactly once" is read off what actually ran."""
from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import cli_zygote
import psycopg
import pytest
from conftest import flowtui, write
from daemon_support import wait_for

from flowtui.runner import executor

DAYS = 100  # runs of 10 tasks: 1,000 tasks
WORK = """
dag_id: work
schedule: '@daily'
start_date: {start}
catchup: true
max_active_runs: 6
tasks:
  extract: {{command: 'echo "$FLOWTUI_RUN_ID extract $FLOWTUI_HOSTNAME" >> {out}'}}
{middle}
  load: {{command: 'echo "$FLOWTUI_RUN_ID load $FLOWTUI_HOSTNAME" >> {out}',
          deps: [{deps}]}}
"""


class Host:
    """A runner on its own "host": its home, its hostname, the shared database."""

    def __init__(self, name: str, tmp: Path, pipelines: Path, url: str,
                 toml: str = "", args: tuple[str, ...] = ()) -> None:
        self.name, self.url = name, url
        self.home = tmp / f"host-{name}"
        self.home.mkdir()
        (self.home / "flowtui.toml").write_text(toml)
        self.env = {**os.environ, "FLOWTUI_HOSTNAME": name, "FLOWTUI_DATABASE_URL": url}
        self.pipelines, self.args = pipelines, args
        self.proc = cli_zygote.client().start(
            ["--home", str(self.home), "--pipelines", str(pipelines), "runner", *args],
            self.env, self.home / "runner.out", session=True)
        wait_for(self._registered, 20, f"the runner on {name} to start")

    def restart(self) -> None:
        """A new runner on the same host, with the same home (after a crash or a stop)."""
        self.proc = cli_zygote.client().start(
            ["--home", str(self.home), "--pipelines", str(self.pipelines), "runner",
             *self.args], self.env, self.home / "runner.out", session=True)
        wait_for(self._registered, 20, f"the runner on {self.name} to start again")

    def _registered(self) -> bool:
        assert self.proc.poll() is None, (self.home / "runner.out").read_text()
        try:
            with psycopg.connect(self.url) as conn:
                return conn.execute("SELECT count(*) FROM runners WHERE hostname = %s AND "
                                    "stopped_at IS NULL AND pid = %s",
                                    (self.name, self.proc.pid)).fetchone()[0] > 0
        except psycopg.errors.UndefinedTable:
            return False  # the first runner is creating the schema

    def task_pids(self) -> list[int]:
        """The task processes this host's runner started: their try mark (an exit file) lies
        in its home. Not the hostname: other tests on this machine name their hosts h1 too."""
        mark = f"{executor.MARK_VAR}={self.home}/".encode()
        return [int(pid) for pid in filter(str.isdigit, os.listdir("/proc"))
                if _env_has(int(pid), mark)]

    def lose(self) -> None:
        """The host goes away: its runner and every task process it started, at once."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        for pid in self.task_pids():  # SIGKILL, as a power cut
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue

    def end_tasks(self) -> None:
        for (mark,) in query(self.url, "SELECT t.exit_path FROM tries t JOIN runners r ON "
                                       "r.id = t.runner_id WHERE r.hostname = %s AND "
                                       "t.end_date IS NULL", self.name):
            executor.kill_tree(None, mark)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def hosts():
    started: list[Host] = []
    yield started
    for host in started:
        host.stop()
        host.end_tasks()  # a stopped runner leaves its tasks to the next one: none comes


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most of these (start, end) intervals open at one moment."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = level = 0
    for _, step in edges:
        level += step
        most = max(most, level)
    return most


def query(url: str, sql: str, *params) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def where_stuck(url: str, hosts: list[Host]) -> str:
    """What the store and each runner say, for a test that waited in vain."""
    lines = [f"runs by state: {query(url, 'SELECT state, count(*) FROM dag_runs GROUP BY state')}",
             f"runners: {query(url, 'SELECT id, hostname, heartbeat_at, stopped_at FROM runners')}"]
    lines += [f"  {row}" for row in query(
        url, "SELECT r.id, r.run_id, r.state, r.runner_id, ti.task_id, ti.state, ti.reason "
             "FROM dag_runs r JOIN task_instances ti ON ti.run_pk = r.id WHERE r.state <> "
             "'success' AND ti.state <> 'success' ORDER BY r.id LIMIT 40")]
    for host in hosts:
        lines.append(f"runner on {host.name}: " + (host.home / "runner.out").read_text()[-1500:])
    return "\n".join(lines)


@pytest.mark.long(15)
def test_three_hosts_run_a_thousand_tasks_each_exactly_once(
        pg_url: str, pipelines: Path, tmp_path: Path, hosts: list[Host]) -> None:
    out = tmp_path / "ran.txt"
    start = (dt.date.today() - dt.timedelta(days=DAYS)).isoformat()
    # the middle tasks share a pool of 3 slots across the three hosts
    middle = "\n".join(f"  t{i}: {{command: 'echo \"$FLOWTUI_RUN_ID t{i} $FLOWTUI_HOSTNAME\" "
                       f">> {out}; sleep 0.01', deps: [extract], pool: narrow}}"
                       for i in range(8))
    write(pipelines, "work.yaml", WORK.format(start=start, out=out, middle=middle,
                                               deps=", ".join(f"t{i}" for i in range(8))))
    # four slots a host: a run's eight-wide middle does not fit on its runner, which offers
    # the rest to every host
    for name in ("h1", "h2", "h3"):
        hosts.append(Host(name, tmp_path, pipelines, pg_url,
                          toml="parallelism = 4\n[pools]\nnarrow = 3\n"))
    wait_for(lambda: query(pg_url, "SELECT count(*) FROM dag_runs WHERE state = 'success'")
             [0][0] == DAYS, 180, f"{DAYS} runs to succeed", lambda: where_stuck(pg_url, hosts))
    lines = out.read_text().splitlines()
    ran = Counter((line.split()[0], line.split()[1]) for line in lines)
    assert len(ran) == DAYS * 10 and set(ran.values()) == {1}, ran.most_common(3)
    by_host = Counter(line.split()[2] for line in lines)
    assert len(by_host) >= 2, by_host  # the work was shared
    assert query(pg_url, "SELECT count(*) FROM tries t JOIN dag_runs d ON d.id = t.run_pk "
                         "WHERE t.runner_id <> d.runner_id")[0][0] > 0  # within runs too
    # the pool's 3 slots were never exceeded across hosts (the tries' recorded times)
    spans = query(pg_url, "SELECT t.start_date, t.end_date FROM tries t JOIN task_instances i "
                          "ON i.run_pk = t.run_pk AND i.task_id = t.task_id WHERE i.pool = "
                          "'narrow'")
    assert len(spans) == DAYS * 8 and most_at_once(spans) <= 3, most_at_once(spans)
    # and max_active_runs (6) held across the hosts too, by the runs' recorded times
    runs = query(pg_url, "SELECT start_date, end_date FROM dag_runs")
    assert most_at_once(runs) <= 6, most_at_once(runs)
    # each daily interval was created once (a run id made unique again would end in .2)
    run_ids = [r[0] for r in query(pg_url, "SELECT run_id FROM dag_runs")]
    assert len(run_ids) == DAYS and all(r.startswith("scheduled__") and "." not in r[-3:]
                                        for r in run_ids)
    # a clear typed on one host reaches the run's owner on another within a second
    owner_host = query(pg_url, "SELECT r.hostname, d.run_id FROM dag_runs d JOIN runners r "
                               "ON r.id = d.runner_id ORDER BY d.id DESC LIMIT 1")[0]
    cli_host = next(h for h in hosts if h.name != owner_host[0])
    cleared = flowtui("clear", "work", owner_host[1], "load", "--yes", home=cli_host.home,
                      pipelines=pipelines, env={"FLOWTUI_HOSTNAME": cli_host.name})
    assert cleared.returncode == 0, cleared.stderr
    wait_for(lambda: Counter(line.split()[1] for line in out.read_text().splitlines()
                             if line.startswith(owner_host[1]))["load"] == 2, 10,
             "the cleared task to run again")
    asked = query(pg_url, "SELECT at FROM requests ORDER BY id DESC LIMIT 1")[0][0]
    again = query(pg_url, "SELECT max(t.start_date) FROM tries t JOIN dag_runs r ON r.id = "
                          "t.run_pk WHERE r.run_id = %s AND t.task_id = 'load'",
                  owner_host[1])[0][0]
    assert again - asked < 1.0, again - asked  # recorded times: the clear acted within a second


@pytest.mark.long(11)
def test_a_lost_host_s_tasks_are_retried_elsewhere_and_nothing_done_runs_again(
        pg_url: str, pipelines: Path, tmp_path: Path, hosts: list[Host]) -> None:
    out = tmp_path / "ran.txt"
    start = (dt.date.today() - dt.timedelta(days=12)).isoformat()
    # b holds on h1 until the host is lost, so the loss surely falls in the middle of a try
    write(pipelines, "slow.yaml", f"""
dag_id: slow
schedule: '@daily'
start_date: {start}
catchup: true
max_active_runs: 4
defaults: {{retries: 1, retry_delay: 0}}
tasks:
  a: {{command: 'echo "$FLOWTUI_RUN_ID a done $FLOWTUI_HOSTNAME" >> {out}'}}
  b: {{command: 'echo "$FLOWTUI_RUN_ID b start $FLOWTUI_HOSTNAME" >> {out};
                 if [ "$FLOWTUI_HOSTNAME" = h1 ]; then sleep 600; else sleep 0.2; fi;
                 echo "$FLOWTUI_RUN_ID b done $FLOWTUI_HOSTNAME" >> {out}', deps: [a]}}
  c: {{command: 'echo "$FLOWTUI_RUN_ID c done $FLOWTUI_HOSTNAME" >> {out}', deps: [b]}}
""")
    lease = 'host_lease = "3s"\n'
    for name in ("h1", "h2", "h3"):
        hosts.append(Host(name, tmp_path, pipelines, pg_url, toml=lease))
    wait_for(lambda: out.exists() and " b start h1" in out.read_text(), 60,
             "h1 to be running a task")
    hosts[0].lose()
    succeeded = set(query(pg_url, "SELECT d.run_id, t.task_id FROM tries t JOIN dag_runs d ON "
                                  "d.id = t.run_pk JOIN runners r ON r.id = t.runner_id WHERE "
                                  "r.hostname = 'h1' AND t.state = 'success'"))
    wait_for(lambda: query(pg_url, "SELECT count(*) FROM dag_runs WHERE state = 'success'")
             [0][0] == 12, 120, "every run to succeed on the hosts left",
             lambda: where_stuck(pg_url, hosts[1:]))
    lines = [line.split() for line in out.read_text().splitlines()]
    done = Counter((w[0], w[1]) for w in lines if w[2] == "done")
    assert len(done) == 12 * 3, sorted(done)  # every task of every run ran to its end
    assert succeeded and all(done[task] == 1 for task in succeeded), succeeded
    again = [w for w in lines if (w[0], w[1]) in succeeded and w[3] != "h1"]
    assert not again, again  # no task that had succeeded ran again
    lost = query(pg_url, "SELECT t.task_id, t.reason FROM tries t JOIN runners r ON "
                         "r.id = t.runner_id WHERE r.hostname = 'h1' AND t.state = 'failed'")
    assert ("b", "host lost: the runner that ran it stopped renewing its lease") in lost, lost
    assert all("host lost" in reason for _, reason in lost), lost
    assert not query(pg_url, "SELECT 1 FROM dag_runs d JOIN runners r ON r.id = d.runner_id "
                             "WHERE r.hostname = 'h1' AND d.state <> 'success'")
    alerts = query(pg_url, "SELECT state, summary FROM alerts WHERE kind = 'host_lost' AND "
                           "task_id = 'h1'")
    assert len(alerts) == 1 and alerts[0][0] == "open" and "lease 3 s" in alerts[0][1], alerts


@pytest.mark.long(12)
def test_a_runner_back_from_a_partition_kills_its_stale_tree_and_writes_nothing(
        pg_url: str, pipelines: Path, tmp_path: Path, hosts: list[Host]) -> None:
    out = tmp_path / "ran.txt"
    write(pipelines, "long.yaml", f"""
dag_id: long
tasks:
  work: {{command: 'echo "start $FLOWTUI_HOSTNAME $FLOWTUI_TRY_NUMBER" >> {out}; sleep 6;
                    echo "done $FLOWTUI_HOSTNAME $FLOWTUI_TRY_NUMBER" >> {out}',
          retries: 1, retry_delay: 0}}
""")
    lease = 'host_lease = "3s"\n'
    first = Host("h1", tmp_path, pipelines, pg_url, toml=lease)
    hosts.append(first)
    assert flowtui("trigger", "long", home=first.home, pipelines=pipelines,
                   env=first.env).returncode == 0
    wait_for(lambda: out.exists() and "start h1 1" in out.read_text(), 30, "h1 to start it")
    stale = first.task_pids()
    assert stale
    os.kill(first.proc.pid, signal.SIGSTOP)  # a partition: h1 says nothing, its task runs on
    try:
        hosts.append(Host("h2", tmp_path, pipelines, pg_url, toml=lease))
        wait_for(lambda: "start h2 2" in out.read_text(), 30, "h2 to retry it after the lease")
    finally:
        os.kill(first.proc.pid, signal.SIGCONT)
    # h1 finds the run taken at its next heartbeat: its tree goes, nothing of it is written
    wait_for(lambda: not any(_alive(pid) for pid in stale), 10, "h1's stale tree to end")
    wait_for(lambda: query(pg_url, "SELECT state FROM dag_runs")[0][0] == "success", 30,
             "the run to end")
    text = out.read_text()
    assert "done h1" not in text and "done h2 2" in text
    tries = query(pg_url, "SELECT t.try_number, t.state, t.reason, r.hostname FROM tries t "
                          "JOIN runners r ON r.id = t.runner_id ORDER BY t.try_number")
    assert [(n, s, h) for n, s, _, h in tries] == [(1, "failed", "h1"), (2, "success", "h2")]
    assert "host lost" in tries[0][2]
    ti = query(pg_url, "SELECT state, try_number FROM task_instances")
    assert ti == [("success", 2)]  # the newer try's state stands
    assert "taken over by another runner" in (first.home / "runner.out").read_text()
    # h1 was paged as lost, and its alert resolves itself now that it beats again
    wait_for(lambda: query(pg_url, "SELECT state FROM alerts WHERE kind = 'host_lost' AND "
                                   "task_id = 'h1'") == [("resolved",)], 15,
             "h1's host_lost alert to resolve")


def _env_has(pid: int, prefix: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            environ = fh.read().split(b"\0")
    except OSError:
        return False
    return any(e.startswith(prefix) for e in environ)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def test_the_tui_shows_hosts_their_leases_and_where_a_try_runs(
        pg_url: str, pipelines: Path, tmp_path: Path, hosts: list[Host]) -> None:
    from app_support import run_async, screen_text, until

    from flowtui.app.acting import TaskRef
    from flowtui.app.app import make_app
    from flowtui.app.task_screen import TaskScreen
    from flowtui.runner.config import load_config

    gate = tmp_path / "gate"
    write(pipelines, "hold.yaml", f"""
dag_id: hold
tasks:
  wait: {{command: 'while [ ! -e {gate} ]; do sleep 0.05; done'}}
""")
    hosts.append(Host("etl-7", tmp_path, pipelines, pg_url, toml='host_lease = "30s"\n'))
    assert flowtui("trigger", "hold", home=hosts[0].home, pipelines=pipelines,
                   env=hosts[0].env).returncode == 0
    wait_for(lambda: query(pg_url, "SELECT count(*) FROM tries WHERE end_date IS NULL")[0][0],
             30, "the task to run on etl-7")

    async def go() -> None:  # the TUI on another host
        app = make_app(load_config(tmp_path / "laptop", pipelines), refresh_seconds=0.2)
        async with app.run_test(size=(160, 40)) as pilot:
            await pilot.press("5")
            await until(pilot, lambda: "etl-7" in screen_text(app), what="the runner's host")
            row = next(line for line in screen_text(app).splitlines() if "etl-7" in line)
            assert "alive" in row and "s left" in row and row.rstrip().endswith("1"), row
            run_pk, run_id = query(pg_url, "SELECT id, run_id FROM dag_runs")[0]
            app.push_screen(TaskScreen(TaskRef("hold", run_pk, run_id, "wait")))
            await until(pilot, lambda: "on etl-7" in screen_text(app),
                        what="the host in task detail")

    try:
        run_async(go())
    finally:
        gate.write_text("open")


def test_a_log_written_on_one_host_is_read_and_followed_from_another(
        pg_url: str, pipelines: Path, tmp_path: Path, hosts: list[Host]) -> None:
    from app_support import run_async, screen_text, until

    from flowtui.app.app import make_app
    from flowtui.runner.config import load_config

    gate = tmp_path / "gate"
    write(pipelines, "talk.yaml", f"""
dag_id: talk
tasks:
  say: {{command: 'echo "line one from $FLOWTUI_HOSTNAME";
                   while [ ! -e {gate} ]; do sleep 0.05; done;
                   echo "line two, the end"; echo "ERROR: disk quota" >&2; exit 4'}}
""")
    worker = Host("etl-9", tmp_path, pipelines, pg_url)
    hosts.append(worker)
    assert flowtui("trigger", "talk", home=worker.home, pipelines=pipelines,
                   env=worker.env).returncode == 0
    laptop = tmp_path / "laptop"  # another host: none of etl-9's files are here
    follow = subprocess.Popen(
        [sys.executable, "-P", "-m", "flowtui", "--home", str(laptop), "--pipelines",
         str(pipelines), "logs", "talk", "latest", "say", "--follow"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "FLOWTUI_HOSTNAME": "laptop"})
    try:
        import select

        assert select.select([follow.stdout], [], [], 20)[0], "no line within 20 s"
        first = follow.stdout.readline()  # live: while the task still runs
        assert first == "line one from etl-9\n"
        started = time.monotonic()
        gate.write_text("open")
        out, err = follow.communicate(timeout=20)
    finally:
        follow.kill()
    assert "line two, the end" in out and "ERROR: disk quota" in out
    assert "failed" in err and time.monotonic() - started < 10

    async def go() -> None:  # and in the TUI on the laptop: the error excerpt and the tail
        app = make_app(load_config(laptop, pipelines), refresh_seconds=0.2)
        async with app.run_test(size=(120, 32)) as pilot:
            await until(pilot, lambda: "ERROR: disk quota" in screen_text(app),
                        what="the excerpt of a log written on etl-9")

    run_async(go())


@pytest.mark.long(7)
def test_queues_send_each_task_to_the_hosts_that_serve_it(
        pg_url: str, pipelines: Path, tmp_path: Path, hosts: list[Host]) -> None:
    out = tmp_path / "ran.txt"
    write(pipelines, "train.yaml", f"""
dag_id: train
tasks:
  fit: {{command: 'echo "train $FLOWTUI_HOSTNAME" >> {out}', queue: gpu}}
""")
    write(pipelines, "etl.yaml", f"""
dag_id: etl
tasks:
  load: {{command: 'echo "etl $FLOWTUI_HOSTNAME" >> {out}'}}
""")
    gpu = Host("gpu-1", tmp_path, pipelines, pg_url, args=("--queues", "gpu"))
    cpu = Host("cpu-1", tmp_path, pipelines, pg_url, args=("--queues", "default"))
    hosts += [gpu, cpu]
    for _ in range(4):
        for dag in ("train", "etl"):
            assert flowtui("trigger", dag, home=cpu.home, pipelines=pipelines,
                           env=cpu.env).returncode == 0
    wait_for(lambda: query(pg_url, "SELECT count(*) FROM dag_runs WHERE state = 'success'")
             [0][0] == 8, 60, "all eight runs")
    assert sorted(set(out.read_text().splitlines())) == ["etl cpu-1", "train gpu-1"]
    # A DAG whose tasks need both queues: each task runs on a host serving its queue, once,
    # the run handed between the hosts as its next tasks need (a parallel branch included).
    write(pipelines, "both.yaml", f"""
dag_id: both
tasks:
  prep: {{command: 'echo "$FLOWTUI_RUN_ID prep $FLOWTUI_HOSTNAME" >> {out}'}}
  fit: {{command: 'echo "$FLOWTUI_RUN_ID fit $FLOWTUI_HOSTNAME" >> {out}', queue: gpu,
         deps: [prep]}}
  stats: {{command: 'echo "$FLOWTUI_RUN_ID stats $FLOWTUI_HOSTNAME" >> {out}', deps: [prep]}}
  report: {{command: 'echo "$FLOWTUI_RUN_ID report $FLOWTUI_HOSTNAME" >> {out}',
            deps: [fit, stats]}}
""")
    for _ in range(3):
        assert flowtui("trigger", "both", home=cpu.home, pipelines=pipelines,
                       env=cpu.env).returncode == 0
    wait_for(lambda: query(pg_url, "SELECT count(*) FROM dag_runs WHERE dag_id = 'both' AND "
                                   "state = 'success'")[0][0] == 3, 60, "the three runs",
             lambda: where_stuck(pg_url, hosts))
    lines = [line.split() for line in out.read_text().splitlines() if "prep" in line
             or "fit" in line or "stats" in line or "report" in line]
    assert Counter((run, task) for run, task, _ in lines) == Counter(
        {(run, task): 1 for run, _, _ in lines for task in ("prep", "fit", "stats", "report")})
    assert {(task, host) for _, task, host in lines} == {
        ("prep", "cpu-1"), ("fit", "gpu-1"), ("stats", "cpu-1"), ("report", "cpu-1")}
    assert query(pg_url, "SELECT count(*) FROM tries t JOIN dag_runs r ON r.id = t.run_pk "
                         "WHERE r.dag_id = 'both'") == [(12,)]  # one try a task, none twice
    # A DAG whose first task is in a queue no runner serves: its run waits, and says why.
    write(pipelines, "tpu.yaml", f"""
dag_id: tpu
tasks:
  shard: {{command: 'echo "tpu $FLOWTUI_HOSTNAME" >> {out}', queue: tpu}}
""")
    assert flowtui("trigger", "tpu", home=cpu.home, pipelines=pipelines,
                   env=cpu.env).returncode == 0

    def reason() -> str:
        return query(pg_url, "SELECT reason FROM task_instances WHERE dag_id = 'tpu'")[0][0]

    wait_for(lambda: "no live runner serves the queue of its first tasks (tpu)" in reason(),
             30, "the queued run to say why it waits")
    assert "flowtui runner --queues tpu" in reason()
    assert "tpu" not in out.read_text()
    bad = flowtui("runner", "--queues", " , ", home=tmp_path / "x", pipelines=pipelines)
    assert bad.returncode == 2 and "--queues is empty" in bad.stderr


def timed_out_run(dag_id: str, pg_url: str, pipelines: Path, hosts: list[Host],
                  timeout: float) -> dict[str, str]:
    """Trigger ``dag_id`` on the first host, wait for its only run to fail (its
    dagrun_timeout), and return its tasks' states."""
    first = hosts[0]
    assert flowtui("trigger", dag_id, home=first.home, pipelines=pipelines,
                   env=first.env).returncode == 0
    wait_for(lambda: query(pg_url, "SELECT state FROM dag_runs") == [("failed",)], timeout,
             "the run to time out", lambda: where_stuck(pg_url, hosts))
    return dict(query(pg_url, "SELECT task_id, state FROM task_instances"))


def test_a_run_handed_between_hosts_times_out_once_by_its_owner(
        pg_url: str, pipelines: Path, tmp_path: Path, hosts: list[Host]) -> None:
    """A run that went from one host to another and back times out by its dagrun_timeout
    once, at its owner of the moment: the timer its first host armed before letting it go
    does nothing (it skipped a task done meanwhile elsewhere and ended the run under its new
    copy, which a late end then flipped to success)."""
    write(pipelines, "round.yaml", """
dag_id: round
dagrun_timeout: 6s
tasks:
  prep: {command: 'true'}
  fit: {command: 'true', queue: gpu, deps: [prep]}
  report: {command: 'sleep 60', deps: [fit]}
""")
    cpu = Host("cpu-1", tmp_path, pipelines, pg_url, args=("--queues", "default"))
    gpu = Host("gpu-1", tmp_path, pipelines, pg_url, args=("--queues", "gpu"))
    hosts += [cpu, gpu]
    states = timed_out_run("round", pg_url, pipelines, hosts, 40)
    assert states == {"prep": "success", "fit": "success", "report": "failed"}, states
    assert query(pg_url, "SELECT count(*) FROM events WHERE kind = 'run' AND "
                         "new_state IN ('failed', 'success')") == [(1,)]  # ended once


def test_a_run_waiting_for_a_queue_nobody_serves_still_times_out(
        pg_url: str, pipelines: Path, tmp_path: Path, hosts: list[Host]) -> None:
    """Let go of by its runner (its next task is in a queue no live runner serves), a run has
    no owner to apply its dagrun_timeout: a runner serving the DAG's other queues takes it
    once the timeout has passed, and it ends failed, its waiting task skipped."""
    write(pipelines, "far.yaml", """
dag_id: far
dagrun_timeout: 2s
tasks:
  prep: {command: 'true'}
  shard: {command: 'true', queue: tpu, deps: [prep]}
""")
    cpu = Host("cpu-1", tmp_path, pipelines, pg_url, args=("--queues", "default"))
    hosts.append(cpu)
    assert timed_out_run("far", pg_url, pipelines, hosts, 30) == \
        {"prep": "success", "shard": "skipped"}


def test_a_kill_typed_on_another_host_ends_the_task_within_a_second(
        pg_url: str, pipelines: Path, tmp_path: Path, hosts: list[Host]) -> None:
    write(pipelines, "stuck.yaml", """
dag_id: stuck
tasks:
  spin: {command: 'sleep 300', kill_grace: 1}
""")
    worker = Host("etl-4", tmp_path, pipelines, pg_url)
    hosts.append(worker)
    assert flowtui("trigger", "stuck", home=worker.home, pipelines=pipelines,
                   env=worker.env).returncode == 0
    wait_for(lambda: query(pg_url, "SELECT count(*) FROM tries WHERE pid IS NOT NULL AND "
                                   "end_date IS NULL")[0][0] == 1, 30, "the task to run")
    laptop = tmp_path / "laptop"
    killed = flowtui("kill", "stuck", "latest", "spin", home=laptop, pipelines=pipelines,
                     env={"FLOWTUI_HOSTNAME": "laptop"})
    assert killed.returncode == 0, killed.stderr
    asked, ended = query(pg_url, "SELECT q.at, t.end_date FROM requests q, tries t")[0]
    assert ended is not None and ended - asked < 1.0, ended - asked  # NOTIFY, not a poll
    assert query(pg_url, "SELECT state FROM task_instances") == [("failed",)]


def test_a_database_server_restart_stops_no_runner_and_loses_nothing(
        pipelines: Path, tmp_path: Path, hosts: list[Host]) -> None:
    import pg_support

    bin_dir = pg_support.binaries()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed here")
    folder = Path(tempfile.mkdtemp(prefix="flowtui-postgresql-own-"))
    server = pg_support.start(folder, bin_dir)  # its own server: this test restarts it
    try:
        url = pg_support.new_database(server)
        out = tmp_path / "ran.txt"
        write(pipelines, "steady.yaml", f"""
dag_id: steady
tasks:
  a: {{command: 'sleep 2; echo a >> {out}'}}
  b: {{command: 'echo b >> {out}', deps: [a]}}
""")
        host = Host("h1", tmp_path, pipelines, url)
        hosts.append(host)
        assert flowtui("trigger", "steady", home=host.home, pipelines=pipelines,
                       env=host.env).returncode == 0
        wait_for(lambda: query(url, "SELECT count(*) FROM tries WHERE end_date IS NULL")[0][0],
                 30, "a to run")
        subprocess.run(pg_support._as_server_user(
            [str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-l",
             str(folder / "server.log"), "-m", "fast", "-w", "restart"]),
            check=True, capture_output=True, timeout=60)
        wait_for(lambda: out.exists() and out.read_text() == "a\nb\n", 60,
                 "the run to finish after the restart")
        wait_for(lambda: query(url, "SELECT state FROM dag_runs") == [("success",)], 30,
                 "the run's success recorded")
        assert host.proc.poll() is None  # the runner lived through it
        said = (host.home / "runner.out").read_text()
        assert "does not answer" in said and "Traceback" not in said, said
    finally:
        for host in hosts:  # while their server still answers
            host.stop()
            host.end_tasks()
        hosts.clear()
        pg_support.stop_folder(folder, bin_dir)
        shutil.rmtree(folder, ignore_errors=True)


class PageServer:
    """A real HTTP server on 127.0.0.1 that records the path of every page posted to it and
    answers 202 after ``delay`` seconds."""

    def __init__(self, delay: float = 0.0) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.posts: list[str] = []
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                posts.append(self.path)
                time.sleep(delay)
                self.send_response(202)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()


def test_an_alert_is_delivered_once_however_many_hosts_send(pg_url: str, tmp_path: Path) -> None:
    """Every runner has a sender; a delivery is taken by one of them (compare-and-set on its
    next attempt), so a page goes out once, not once a host."""
    from flowtui.runner.alerting import parse_alerting
    from flowtui.runner.notify import Sender
    from flowtui.store import Store

    pages = PageServer(delay=0.5)  # both senders would be inside a send at once
    posts, server = pages.posts, pages.server
    config = parse_alerting({"channels": {"hook": {"type": "webhook",
                                                   "url": f"{pages.url}/page"}}})
    store = Store.open(pg_url)
    senders = []
    try:
        now = store.now()
        with store.transaction():
            alert_id = store.alerts.insert("host_lost", "", "", "h9", "critical", "h9 lost", now)
            store.alerts.enqueue(alert_id, "hook", "trigger", now)
        senders = [Sender(pg_url, config) for _ in range(3)]  # three hosts' senders
        for sender in senders:
            sender.start()
        wait_for(lambda: query(pg_url, "SELECT status FROM deliveries") == [("sent",)], 20,
                 "the delivery to be sent")
        time.sleep(0.6)  # a second send, were there one, would have arrived by now
        assert len(posts) == 1, posts
    finally:
        for sender in senders:
            sender.stop()
            sender.join(10)
        store.close()
        server.shutdown()


def test_a_page_for_a_channel_only_another_host_names_is_left_to_that_host(
        pg_url: str) -> None:
    """Hosts with flowtui.toml files of their own: h2's names only `own`, h1's only `hook`.
    h2's sender sends its own pages and leaves the `hook` page to h1's sender (it closed it as
    "not configured", so h1 never paged); a page for a channel no live runner names is still
    closed, with why."""
    from flowtui.runner.alerting import parse_alerting
    from flowtui.runner.notify import Sender
    from flowtui.store import Store

    pages = PageServer()
    posts, server, url = pages.posts, pages.server, pages.url
    h1 = parse_alerting({"channels": {"hook": {"type": "webhook", "url": f"{url}/hook"}}})
    h2 = parse_alerting({"channels": {"own": {"type": "webhook", "url": f"{url}/own"}}})
    store = Store.open(pg_url)
    senders: list[Sender] = []

    def status(channel: str) -> list[tuple]:
        return query(pg_url, "SELECT status, attempts, last_status FROM deliveries WHERE "
                             "channel = %s", channel)

    try:
        store.register_runner("daemon", lease=60, channels=h1.channels)  # h1, alive
        store.register_runner("daemon", lease=60, channels=h2.channels)
        now = store.now()
        with store.transaction():
            alert_id = store.alerts.insert("task_failed", "a", "r1", "t", "error", "exited 1", now)
            for channel in ("hook", "own"):
                store.alerts.enqueue(alert_id, channel, "trigger", now)
        senders.append(Sender(pg_url, h2))
        senders[0].start()
        wait_for(lambda: "/own" in posts, 20, "h2's own page")
        time.sleep(0.5)  # h2's pass that sent its page has looked at h1's too
        assert status("hook") == [("pending", 0, "")], status("hook")
        senders.append(Sender(pg_url, h1))
        senders[1].start()
        wait_for(lambda: status("hook")[0][0] == "sent", 20, "h1's sender to page")
        assert posts.count("/hook") == 1
        with store.transaction():  # a channel no live runner names any more
            store.alerts.enqueue(alert_id, "gone", "trigger", store.now())
        senders[0].wake()
        wait_for(lambda: status("gone")[0][0] != "pending", 20, "the page nobody can send")
        assert status("gone") == [("failed", 1, "channel 'gone' is not configured")]
    finally:
        for sender in senders:
            sender.stop()
            sender.join(10)
        store.close()
        server.shutdown()


def test_an_escalation_step_fires_once_however_many_hosts_look(pg_url: str) -> None:
    """Every runner escalates what came due; the step is read again under the write lock, so
    the pager is asked once, not once a host."""
    import threading

    from flowtui.runner.alerting import Alerts, parse_alerting
    from flowtui.store import Store

    config = parse_alerting({
        "channels": {"pager": {"type": "webhook", "url": "http://127.0.0.1:9/unused"},
                     "chat": {"type": "webhook", "url": "http://127.0.0.1:9/unused"}},
        "policies": {"oncall": {"on": ["host_lost"], "steps": [
            {"after": "0m", "notify": ["chat"]}, {"after": "5m", "notify": ["pager"]}]}}})
    first = Store.open(pg_url)
    alert_id = Alerts(first, config, {}).raise_alert("host_lost", "", task_id="h9",
                                                    summary="h9 lost", now=1000.0)
    stores = [Store.open(pg_url) for _ in range(3)]  # three hosts' runners
    try:
        barrier = threading.Barrier(3)

        def escalate(store: Store) -> None:
            barrier.wait()
            Alerts(store, config, {}).escalate(now=1000.0 + 301)

        threads = [threading.Thread(target=escalate, args=(s,)) for s in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        sent = query(pg_url, "SELECT channel FROM deliveries WHERE alert_id = %s ORDER BY id",
                     alert_id)
        assert sent == [("chat",), ("pager",)], sent
    finally:
        for store in [first, *stores]:
            store.close()


@pytest.mark.long(6)
def test_a_backfill_keeps_its_parallelism_across_hosts(
        pg_url: str, pipelines: Path, tmp_path: Path, hosts: list[Host]) -> None:
    write(pipelines, "daily.yaml", """
dag_id: daily
schedule: '@daily'
start_date: 2026-01-01
tasks:
  work: {command: 'sleep 0.3'}
""")
    for name in ("h1", "h2", "h3"):
        hosts.append(Host(name, tmp_path, pipelines, pg_url))
    done = flowtui("backfill", "daily", "--start", "2026-03-01", "--end", "2026-03-09",
                   "--parallelism", "2", home=hosts[0].home, pipelines=pipelines,
                   env=hosts[0].env)
    assert done.returncode == 0, done.stderr
    wait_for(lambda: query(pg_url, "SELECT count(*) FROM dag_runs WHERE backfill_id IS NOT "
                                   "NULL AND state = 'success'")[0][0] == 9, 90,
             "the backfill's nine runs")
    spans = query(pg_url, "SELECT start_date, end_date FROM dag_runs WHERE backfill_id IS NOT "
                          "NULL")
    assert most_at_once(spans) <= 2, most_at_once(spans)


def _barrier(out: Path, n: int) -> str:
    """A task's command: say it started, hold until ``n`` tasks have started (a minute at
    most, then fail), say it is done."""
    return (f'echo "$FLOWTUI_TASK_ID start $FLOWTUI_HOSTNAME" >> {out}; i=0; '
            f'while [ "$(grep -c " start " {out})" -lt {n} ]; do i=$((i+1)); '
            f'[ $i -gt 1200 ] && exit 1; sleep 0.05; done; '
            f'echo "$FLOWTUI_TASK_ID done $FLOWTUI_HOSTNAME" >> {out}')


@pytest.mark.long(6)
def test_one_wide_run_runs_on_every_host_at_once(
        pg_url: str, pipelines: Path, tmp_path: Path, hosts: list[Host]) -> None:
    """SPEC 10: tasks, not runs, are what hosts claim. Three hosts of two slots each run the
    six tasks of one run at the same time (each task holds until all six have started, so
    the run ends only if they did), each task once; its last task starts on the run's owner
    as soon as the others end, wherever they ran."""
    out = tmp_path / "ran.txt"
    tasks = "\n".join(f"  w{i}: {{command: '{_barrier(out, 6)}'}}" for i in range(6))
    write(pipelines, "wide.yaml", f"""
dag_id: wide
tasks:
{tasks}
  last: {{command: 'echo "last start $FLOWTUI_HOSTNAME" >> {out}', deps: [{", ".join(f"w{i}" for i in range(6))}]}}
""")
    for name in ("h1", "h2", "h3"):
        hosts.append(Host(name, tmp_path, pipelines, pg_url, toml="parallelism = 2\n"))
    assert flowtui("trigger", "wide", home=hosts[0].home, pipelines=pipelines,
                   env=hosts[0].env).returncode == 0
    wait_for(lambda: query(pg_url, "SELECT state FROM dag_runs") == [("success",)], 60,
             "the wide run to succeed", lambda: where_stuck(pg_url, hosts))
    lines = [line.split() for line in out.read_text().splitlines()]
    assert Counter(w[0] for w in lines if w[1] == "start") == {
        **{f"w{i}": 1 for i in range(6)}, "last": 1}
    ran_on = Counter(w[2] for w in lines if w[1] == "start" and w[0] != "last")
    assert ran_on == {"h1": 2, "h2": 2, "h3": 2}, ran_on  # two slots a host, all at once
    rows = query(pg_url, "SELECT t.task_id, r.hostname, t.state, t.start_date, t.end_date "
                         "FROM tries t JOIN runners r ON r.id = t.runner_id")
    assert len(rows) == 7 and {row[2] for row in rows} == {"success"}, rows
    owner = query(pg_url, "SELECT r.hostname FROM dag_runs d JOIN runners r ON "
                          "r.id = d.runner_id")[0][0]
    last = next(row for row in rows if row[0] == "last")
    assert last[1] == owner
    waited = last[3] - max(row[4] for row in rows if row[0] != "last")
    assert waited < 0.5, waited  # the ends elsewhere reached the owner by notification
    states = query(pg_url, "SELECT DISTINCT e.old_state, e.new_state FROM events e WHERE "
                           "e.kind = 'task' AND e.task_id LIKE 'w%%'")
    assert ("queued", "running") in states, states  # offered, then claimed


@pytest.mark.long(10)
def test_a_try_claimed_by_another_host_is_killed_from_anywhere_and_retried_when_lost(
        pg_url: str, pipelines: Path, tmp_path: Path, hosts: list[Host]) -> None:
    """A try running on a host other than its run's owner: a kill typed on a third machine
    ends it within a second; when that host is paused past its lease, the owner fails the
    try `host lost` and retries it on a live host, and the paused host, back, kills its
    stale tree and writes nothing of it."""
    out = tmp_path / "ran.txt"
    write(pipelines, "pair.yaml", f"""
dag_id: pair
defaults: {{kill_grace: 1}}
tasks:
  hold: {{command: 'echo "hold start $FLOWTUI_HOSTNAME" >> {out}; sleep 300'}}
  away: {{command: 'echo "away start $FLOWTUI_HOSTNAME $FLOWTUI_TRY_NUMBER" >> {out};
                    sleep 8; echo "away done $FLOWTUI_HOSTNAME $FLOWTUI_TRY_NUMBER" >> {out}',
          retries: 1, retry_delay: 0}}
  spin: {{command: 'echo "spin start $FLOWTUI_HOSTNAME" >> {out}; sleep 300'}}
""")
    lease = 'host_lease = "3s"\nparallelism = 1\n'
    owner = Host("h1", tmp_path, pipelines, pg_url, toml=lease)
    hosts.append(owner)
    assert flowtui("trigger", "pair", home=owner.home, pipelines=pipelines,
                   env=owner.env).returncode == 0
    wait_for(lambda: out.exists() and " start h1" in out.read_text(), 30, "h1 to start one")
    for name in ("h2", "h3"):
        hosts.append(Host(name, tmp_path, pipelines, pg_url, toml=lease))

    def host_of(task: str) -> str | None:
        words = [line.split() for line in out.read_text().splitlines()]
        return next((w[2] for w in words if w[0] == task and w[1] == "start"), None)

    wait_for(lambda: all(host_of(t) for t in ("hold", "away", "spin")), 30,
             "the three tasks to run, one a host", lambda: where_stuck(pg_url, hosts))
    by_name = {h.name: h for h in hosts}
    # a kill typed on a laptop reaches the host running the try, through its run's owner
    spinner = host_of("spin")
    killed = flowtui("kill", "pair", "latest", "spin", home=tmp_path / "laptop",
                     pipelines=pipelines, env={"FLOWTUI_HOSTNAME": "laptop"})
    assert killed.returncode == 0, killed.stderr
    wait_for(lambda: query(pg_url, "SELECT state FROM task_instances WHERE task_id = 'spin'")
             == [("failed",)], 10, "the kill to end spin")
    asked = query(pg_url, "SELECT at FROM requests")[0][0]
    ended = query(pg_url, "SELECT exited_at FROM tries WHERE task_id = 'spin'")[0][0]
    assert ended - asked < 1.0, ended - asked
    assert not by_name[spinner].task_pids() or spinner == "h1"
    # the host running `away` (h1 holds `hold`, its only slot) is paused past its lease
    away_host = by_name[host_of("away")]
    assert away_host is not owner
    stale = away_host.task_pids()
    assert stale
    os.kill(away_host.proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: "away start" in out.read_text() and
                 sum(" start " in line and line.startswith("away") for line in
                     out.read_text().splitlines()) == 2, 30,
                 "the owner to retry away on a live host", lambda: where_stuck(pg_url, hosts))
    finally:
        os.kill(away_host.proc.pid, signal.SIGCONT)
    wait_for(lambda: not any(_alive(pid) for pid in stale), 10, "the stale tree to end")
    wait_for(lambda: query(pg_url, "SELECT state FROM task_instances WHERE task_id = 'away'")
             == [("success",)], 30, "the retry to succeed", lambda: where_stuck(pg_url, hosts))
    text = out.read_text()
    assert f"away done {away_host.name} 1" not in text and "away done" in text
    tries = query(pg_url, "SELECT t.try_number, t.state, t.reason, r.hostname, t.exited_at "
                          "FROM tries t JOIN runners r ON r.id = t.runner_id WHERE "
                          "t.task_id = 'away' ORDER BY t.try_number")
    assert [(n, s, h) for n, s, _, h, _ in tries][0] == (1, "failed", away_host.name), tries
    assert "host lost" in tries[0][2] and tries[0][4] is None, tries  # nothing of it written
    assert tries[1][1] == "success" and tries[1][3] != away_host.name, tries
    assert "was ended by its run's runner" in (away_host.home / "runner.out").read_text()


@pytest.mark.long(8)
def test_a_runner_restarted_at_once_carries_on_what_its_predecessor_ran(
        pg_url: str, pipelines: Path, tmp_path: Path, hosts: list[Host]) -> None:
    """kill -9 of a runner, restarted at once on the same host (well within its lease): the
    new runner finds the tries the dead one ran, for its own run and for another host's, and
    watches them to their end. Nothing is run again, nothing is declared lost."""
    out = tmp_path / "ran.txt"
    job = ('echo "{name} start $FLOWTUI_TRY_NUMBER" >> %s; sleep 4; '
           'echo "{name} done $FLOWTUI_TRY_NUMBER" >> %s' % (out, out))
    write(pipelines, "both.yaml", f"""
dag_id: both
tasks:
  solo: {{command: '{job.format(name="solo")}'}}
  fit: {{command: '{job.format(name="fit")}', queue: gpu}}
""")
    lease = 'host_lease = "30s"\n'
    owner = Host("cpu-1", tmp_path, pipelines, pg_url, toml=lease, args=("--queues", "default"))
    gpu = Host("gpu-1", tmp_path, pipelines, pg_url, toml=lease, args=("--queues", "gpu"))
    hosts += [owner, gpu]
    assert flowtui("trigger", "both", home=owner.home, pipelines=pipelines,
                   env=owner.env).returncode == 0
    wait_for(lambda: out.exists() and "solo start" in out.read_text() and
             "fit start" in out.read_text(), 30, "both tasks to start")
    for host in (gpu, owner):  # each runner dies and is started again at once
        os.kill(host.proc.pid, signal.SIGKILL)
        host.proc.wait(10)
        host.restart()
    wait_for(lambda: query(pg_url, "SELECT state FROM dag_runs") == [("success",)], 30,
             "the run to succeed", lambda: where_stuck(pg_url, hosts))
    assert sorted(out.read_text().splitlines()) == [
        "fit done 1", "fit start 1", "solo done 1", "solo start 1"]
    tries = query(pg_url, "SELECT t.task_id, t.try_number, t.state, r.hostname FROM tries t "
                          "JOIN runners r ON r.id = t.runner_id ORDER BY 1")
    assert tries == [("fit", 1, "success", "gpu-1"), ("solo", 1, "success", "cpu-1")], tries
    assert not query(pg_url, "SELECT 1 FROM alerts WHERE kind = 'host_lost'")


@pytest.mark.long(6)
def test_a_runner_stopped_on_purpose_hands_back_the_tries_it_ran_for_others(
        pg_url: str, pipelines: Path, tmp_path: Path, hosts: list[Host]) -> None:
    """SIGTERM to a runner running a try for another host's run: the try ends (its tree
    goes, nobody else could watch it) and runs again at once on a host still up, using no
    retry."""
    out = tmp_path / "ran.txt"
    write(pipelines, "train.yaml", f"""
dag_id: train
tasks:
  prep: {{command: 'true'}}
  fit: {{command: 'echo "fit start $FLOWTUI_HOSTNAME $FLOWTUI_TRY_NUMBER" >> {out};
                   [ "$FLOWTUI_TRY_NUMBER" = 1 ] && sleep 300; true', queue: gpu,
         deps: [prep]}}
""")
    owner = Host("cpu-1", tmp_path, pipelines, pg_url, args=("--queues", "default"))
    first = Host("gpu-1", tmp_path, pipelines, pg_url, args=("--queues", "gpu"))
    hosts += [owner, first]
    assert flowtui("trigger", "train", home=owner.home, pipelines=pipelines,
                   env=owner.env).returncode == 0
    wait_for(lambda: out.exists() and "fit start gpu-1 1" in out.read_text(), 30,
             "gpu-1 to run fit")
    stale = first.task_pids()
    hosts.append(Host("gpu-2", tmp_path, pipelines, pg_url, args=("--queues", "gpu")))
    first.stop()
    assert not any(_alive(pid) for pid in stale)
    wait_for(lambda: query(pg_url, "SELECT state FROM dag_runs") == [("success",)], 15,
             "fit to run again on gpu-2", lambda: where_stuck(pg_url, hosts))
    tries = query(pg_url, "SELECT t.try_number, t.state, t.reason, r.hostname FROM tries t "
                          "JOIN runners r ON r.id = t.runner_id WHERE t.task_id = 'fit' "
                          "ORDER BY 1")
    assert [(n, s, h) for n, s, _, h in tries] == [(1, "failed", "gpu-1"),
                                                   (2, "success", "gpu-2")], tries
    assert "stopped before it ended" in tries[0][2]
    assert query(pg_url, "SELECT max_tries FROM task_instances WHERE task_id = 'fit'") == [
        (2,)]  # no retry used up


@pytest.mark.long(10)
def test_a_runner_restarted_on_purpose_keeps_its_tasks_from_other_hosts(
        pg_url: str, pipelines: Path, tmp_path: Path, hosts: list[Host]) -> None:
    """A stop leaves a runner's tasks running for the next runner (a deploy's restart). On
    a database several hosts share, another host must not take the stopped runner's runs
    while its tasks run on: it would fail them as a lost host's and run them again beside
    the ones still running. For the runner's lease only a runner on its own host takes them;
    the restart does, and watches them to their end."""
    out = tmp_path / "ran.txt"
    write(pipelines, "long.yaml", f"""
dag_id: long
tasks:
  work: {{command: 'echo "start $FLOWTUI_HOSTNAME $FLOWTUI_TRY_NUMBER" >> {out}; sleep 8;
                    echo "done $FLOWTUI_TRY_NUMBER" >> {out}', retries: 1, retry_delay: 0}}
  other: {{command: 'true'}}
""")
    lease = 'host_lease = "12s"\n'
    first = Host("h1", tmp_path, pipelines, pg_url, toml=lease)
    hosts.append(first)
    assert flowtui("trigger", "long", home=first.home, pipelines=pipelines,
                   env=first.env).returncode == 0
    wait_for(lambda: out.exists() and "start h1 1" in out.read_text(), 30, "h1 to start it")
    second = Host("h2", tmp_path, pipelines, pg_url, toml=lease)
    hosts.append(second)
    first.stop()
    stopped = query(pg_url, "SELECT stopped_at FROM runners WHERE hostname = 'h1'")[0][0]
    # an operator's clear from h2 meanwhile is left for the run's runner too (h2 applying it
    # would take the run)
    cleared = flowtui("clear", "long", "latest", "other", "--yes", home=second.home,
                      pipelines=pipelines, env=second.env)
    assert not query(pg_url, "SELECT result FROM requests WHERE done_at IS NOT NULL"), \
        cleared.stdout
    # h2 looks for runs to adopt every 2 s: give it two looks at the stopped runner's run
    wait_for(lambda: time.time() - stopped > 4.5, 10, "two of h2's looks")
    first.restart()
    wait_for(lambda: query(pg_url, "SELECT state FROM dag_runs") == [("success",)], 30,
             "the run to succeed", lambda: where_stuck(pg_url, hosts))
    assert out.read_text().splitlines() == ["start h1 1", "done 1"]
    assert query(pg_url, "SELECT task_id, try_number, state FROM tries ORDER BY 1, 2") == [
        ("other", 1, "success"), ("other", 2, "success"), ("work", 1, "success")]
