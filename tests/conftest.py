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
    """Two workers a core for ``-n auto``: most tests wait on real processes and terminals, so
    twice as many overlap their waits (measured here: 4 min 12 s with two, 3 min 21 s with four,
    and green beside a CPU hog either way)."""
    return 2 * (os.cpu_count() or 1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest tests first, by the durations recorded last time: with a worker per core,
    a long test left for the end would run alone while the other cores idle. The others keep
    their order (the sort is stable), so every worker collects the same list."""
    cache = getattr(config, "cache", None)
    known: dict[str, float] = cache.get(DURATIONS, {}) if cache is not None else {}
    items.sort(key=lambda item: -known.get(item.nodeid, 0.0)
               if known.get(item.nodeid, 0.0) >= LONG else 0.0)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _took[report.nodeid] = _took.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Record this run's durations (the controller sees every worker's reports), and stop the
    PostgreSQL server the workers shared."""
    for server in _zygote_now:
        server.stop()
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
    return _zygote().run(argv, full_env, timeout)


class _Zygote:
    """This test process's CLI server (tests/cli_zygote.py), started on first use."""

    def __init__(self) -> None:
        import tempfile

        self.folder = Path(tempfile.mkdtemp(prefix="flowtui-cli-"))
        self.socket = str(self.folder / "cli.sock")
        self.calls = 0
        self.proc = subprocess.Popen(
            [sys.executable, "-P", str(Path(__file__).with_name("cli_zygote.py")), self.socket],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline() == b"ready\n"

    def run(self, argv: list[str], env: dict[str, str],
            timeout: float) -> subprocess.CompletedProcess[str]:
        import json
        import signal
        import socket
        import time

        self.calls += 1
        out, err = self.folder / f"{self.calls}.out", self.folder / f"{self.calls}.err"
        request = {"argv": argv, "env": env, "cwd": os.getcwd(), "out": str(out),
                   "err": str(err)}
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(self.socket)
            conn.sendall(json.dumps(request).encode() + b"\n")
            reader = conn.makefile("rb")
            pid = json.loads(reader.readline())["pid"]
            conn.settimeout(max(0.0, deadline - time.monotonic()))
            try:
                line = reader.readline()
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                raise subprocess.TimeoutExpired(["flowtui", *argv], timeout) from None
            returncode = json.loads(line)["rc"]
        result = subprocess.CompletedProcess(["flowtui", *argv], returncode,
                                             out.read_text(), err.read_text())
        out.unlink()
        err.unlink()
        return result

    def stop(self) -> None:
        import shutil

        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


_zygote_now: list[_Zygote] = []


def _zygote() -> _Zygote:
    if not _zygote_now or _zygote_now[0].proc.poll() is not None:
        _zygote_now[:] = [_Zygote()]
    return _zygote_now[0]


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

