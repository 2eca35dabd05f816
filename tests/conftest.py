"""Shared fixtures: a temporary home and pipelines folder, kept apart from the user's own."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DURATIONS = "flowtui/durations"  # a test's last recorded seconds, in pytest's cache
LONG = 1.0  # tests this long or longer start first
_took: dict[str, float] = {}


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """Three workers a core for ``-n auto``: many tests wait on real processes, terminals and
    leases, and more workers overlap those waits. Measured here (2 cores, the CI way, 591
    tests): 4 workers 141-146 s, 5 ~132 s, 6 130 s, 8 141 s with a test failing for the
    contention; beside a 2-process CPU hog, 6 workers 181 s and green (4: 199-209 s)."""
    return 3 * (os.cpu_count() or 1)


def pytest_configure(config: pytest.Config) -> None:
    """In the controller of a parallel run, write the test modules' assertion-rewritten bytecode
    once, before the workers start: on a fresh clone each of the six workers parsed, rewrote
    and compiled all of them itself (~1.7 s of CPU each, 10 s in all on two cores). pytest's
    own cache, written the way its import hook writes it; left to the workers when pytest's
    internals differ or bytecode is not written."""
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None) \
            or sys.dont_write_bytecode:
        return
    try:
        from _pytest.assertion import assertstate_key
        from _pytest.assertion.rewrite import (PYC_TAIL, _read_pyc, _rewrite_test, _write_pyc,
                                               get_cache_dir)

        state = config.stash[assertstate_key]
        for source in sorted(Path(__file__).parent.glob("test_*.py")) + [Path(__file__)]:
            pyc = get_cache_dir(source) / (source.name[:-3] + PYC_TAIL)
            if _read_pyc(source, pyc, state.trace) is None:
                pyc.parent.mkdir(exist_ok=True)
                source_stat, code = _rewrite_test(source, config)
                _write_pyc(state, code, source_stat, pyc)
    except Exception:  # noqa: BLE001 - an optimisation only: the workers rewrite as before
        return


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each worker starts on its share of the long tests: a long test left for the end would
    run alone while the other cores idle. A test's length is what it took last time (pytest's
    cache), else what its ``long(seconds)`` marker says (a fresh clone has no cache).

    xdist's work stealing hands each worker a contiguous slice of this list and steals from
    the slices' ends, so the long tests are dealt out to the slices (the least loaded first)
    and put at their fronts. Every worker computes the same order from the same inputs."""
    cache = getattr(config, "cache", None)
    known: dict[str, float] = cache.get(DURATIONS, {}) if cache is not None else {}
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))

    def length(item: pytest.Item) -> float:
        marker = item.get_closest_marker("long")
        seconds = known.get(item.nodeid, marker.args[0] if marker else 0.0)
        return seconds if seconds >= LONG else 0.0

    longs = sorted((item for item in items if length(item)), key=lambda item: -length(item))
    shorts = [item for item in items if not length(item)]
    sizes, left = [], len(items)
    for remaining in range(workers, 0, -1):  # the sizes xdist's first hand-out gives
        sizes.append(left // remaining)
        left -= sizes[-1]
    slices: list[list[pytest.Item]] = [[] for _ in range(workers)]
    loads = [0.0] * workers
    for item in longs:
        open_slices = [i for i in range(workers) if len(slices[i]) < sizes[i]]
        chosen = min(open_slices, key=lambda i: loads[i])
        slices[chosen].append(item)
        loads[chosen] += length(item)
    rest = iter(shorts)
    for i in range(workers):
        slices[i].extend(next(rest) for _ in range(sizes[i] - len(slices[i])))
    items[:] = [item for part in slices for item in part]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _took[report.nodeid] = _took.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Record this run's durations (the controller sees every worker's reports), and stop the
    PostgreSQL server the workers shared."""
    import cli_zygote

    cli_zygote.stop()
    if not hasattr(session.config, "workerinput"):
        import pg_support

        base = session.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
        pg_support.stop(base)
    cache = getattr(session.config, "cache", None)
    if cache is None or hasattr(session.config, "workerinput") or not _took:
        return
    known = cache.get(DURATIONS, {})
    known.update({nodeid: round(seconds, 2) for nodeid, seconds in _took.items()})
    cache.set(DURATIONS, known)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the user's ~/.flowtui, FLOWTUI_* variables and config out of every test."""
    for name in list(os.environ):
        if name.startswith("FLOWTUI_"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user-home"))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def pipelines(tmp_path: Path) -> Path:
    path = tmp_path / "pipelines"
    path.mkdir()
    return path


def on_this_machine(seconds: float) -> float:
    """A wall-clock budget a user sees on a machine with a core to spare, stretched by how many
    runnable processes share each core right now: the suite's parallel workers and whatever else
    runs beside it. The unstretched figure is measured alone by bench/ and written in
    docs/benchmarks.md; here it guards against regressions without failing for the load."""
    return seconds * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def flowtui(*args: str, home: Path | None = None, pipelines: Path | None = None,
            timeout: float = 120, env: dict[str, str] | None = None,
            fresh: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the real ``flowtui`` command in its own process: forked from a process that has the
    CLI imported (tests/cli_zygote.py), or a new interpreter with ``fresh`` (for tests of how
    the command starts)."""
    argv = []
    if home is not None:
        argv += ["--home", str(home)]
    if pipelines is not None:
        argv += ["--pipelines", str(pipelines)]
    argv += list(args)
    full_env = dict(os.environ)
    full_env.update(env or {})
    if fresh:
        return subprocess.run([sys.executable, "-P", "-m", "flowtui", *argv],
                              capture_output=True, text=True, timeout=timeout, env=full_env)
    import cli_zygote

    return cli_zygote.client().run(argv, full_env, timeout)


@pytest.fixture
def runners():
    """Runners a test starts with ``daemon_support.start``; all stopped when it ends."""
    started: list = []
    yield started
    for runner in started:
        runner.stop()
    for home in {runner.home for runner in started}:
        end_task_processes(home)


def end_task_processes(home: Path) -> None:
    """A stopped runner leaves its tasks running (the next runner adopts them): a test's home
    is never used again, so its tasks are ended with it."""
    import sqlite3

    from flowtui.runner import executor

    try:
        conn = sqlite3.connect(home / "flowtui.db")
        marks = [row[0] for row in conn.execute("SELECT exit_path FROM tries WHERE end_date IS NULL")]
        conn.close()
    except sqlite3.Error:
        return
    for mark in marks:
        executor.kill_tree(None, mark)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The session's PostgreSQL server (tests/pg_support.py)."""
    import pg_support

    return pg_support.server_url(tmp_path_factory.getbasetemp())


@pytest.fixture
def pg_url(pg_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh PostgreSQL database, named to every flowtui this test starts."""
    import pg_support

    url = pg_support.new_database(pg_server)
    monkeypatch.setenv("FLOWTUI_DATABASE_URL", url)
    return url

