"""End to end in a real terminal: tmux runs ``flowtui``, keys go in with send-keys, and the
screen is read back with capture-pane."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import flowtui, on_this_machine, write

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (CI installs it)")
SAMPLES = Path(__file__).resolve().parent.parent / "sample_pipelines"


class Terminal:
    def __init__(self, socket: str, width: int, height: int) -> None:
        self.socket = socket
        # The terminal's server, and so the shell and flowtui in it, runs before other tests and
        # background load (where allowed: as root), so the times asserted are the product's own.
        subprocess.run(["nice", "-n", "-10", "tmux", "-L", socket, "new-session", "-d", "-s", "t",
                        "-x", str(width), "-y", str(height), "bash --norc --noprofile"],
                       capture_output=True, text=True, check=True)

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True,
                              text=True, check=True).stdout

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "t", "-l", text)

    def keys(self, *keys: str) -> None:
        for key in keys:  # one at a time: ESC followed by a key would read as Alt+key
            self.tmux("send-keys", "-t", "t", key)
            time.sleep(0.15)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def wait_for(self, *words: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            shown = self.screen()
            if all(word in shown for word in words):
                return shown
            if time.monotonic() > deadline:
                raise AssertionError(f"{words} not on screen after {timeout}s:\n{shown}")
            time.sleep(0.1)

    def close(self) -> None:
        """End the terminal and what runs in it: a TUI may outlive its terminal (a thread of
        its own keeps it up), and a test's processes end with the test."""
        try:
            shell = int(self.tmux("display-message", "-p", "-t", "t", "#{pane_pid}").strip())
            started = psutil.Process(shell).children(recursive=True)
        except (subprocess.CalledProcessError, ValueError, psutil.Error):
            started = []
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)
        for process in started:
            try:
                process.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(started, timeout=5)


@pytest.fixture
def setup(home: Path, pipelines: Path, tmp_path: Path) -> Iterator[tuple[Terminal, Path, Path]]:
    for path in SAMPLES.glob("*.yaml"):
        shutil.copy(path, pipelines)
    shutil.copytree(SAMPLES / "scripts", pipelines / "scripts")
    term = Terminal(f"flowtui-test-{os.getpid()}-{time.monotonic_ns()}", 100, 30)
    yield term, home, pipelines
    term.close()
    import sqlite3

    try:
        conn = sqlite3.connect(home / "flowtui.db")
        pids = [r[0] for r in conn.execute("SELECT pid FROM runners WHERE stopped_at IS NULL")]
        conn.close()
    except sqlite3.Error:
        pids = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass


def open_dag(term: Terminal, name: str) -> None:
    """DAGs screen, filter to the DAG, open it: what an operator types."""
    term.keys("1")
    term.wait_for("DAGs")
    term.keys("/")
    term.type(name)
    term.keys("Enter")
    term.wait_for(name)
    term.keys("Enter")


def start_ui(term: Terminal, home: Path, pipelines: Path) -> float:
    command = (f"{sys.executable} -P -m flowtui --home {home} --pipelines {pipelines}")
    started = time.monotonic()
    term.type(command)
    term.keys("Enter")
    return started


@pytest.mark.long(9)
def test_live_states_clear_and_following_a_log(setup, tmp_path: Path) -> None:
    term, home, pipelines = setup
    flag = tmp_path / "gate"
    write(pipelines, "gate.yaml", f"""
        dag_id: gate
        tasks:
          check: {{command: '[ -e {flag} ] || {{ echo "gate closed"; exit 1; }}'}}
          after: {{command: 'echo after', deps: [check]}}
    """)
    more = tmp_path / "more"  # each task waits on its file: the test sees it running however
    release = tmp_path / "release"  # slowly the screen opens on a loaded machine
    write(pipelines, "talker.yaml", f"""
        dag_id: talker
        tasks:
          talk: {{command: 'echo "line 1"; while [ ! -e {more} ]; do sleep 0.05; done;
                          for i in 2 3 4 5 6; do echo "line $i"; sleep 0.3; done'}}
    """)
    write(pipelines, "held.yaml", f"""
        dag_id: held
        tasks:
          extract: {{command: 'while [ ! -e {release} ]; do sleep 0.05; done'}}
          load: {{command: 'echo loaded', deps: [extract]}}
    """)
    start_ui(term, home, pipelines)
    term.wait_for("● runner", "Now")
    # A DAG's tasks turn from running to success in the grid.
    assert flowtui("trigger", "held", home=home, pipelines=pipelines).returncode == 0
    open_dag(term, "held")
    term.wait_for("DAG held", "▶")
    release.write_text("go")
    tasks = ("extract", "load")
    deadline = time.monotonic() + 20
    while True:  # the newest run's column (the last) turns ✓ for every task
        last = {line.split()[0]: line.split()[-1] for line in term.screen().splitlines()
                if line.split() and line.split()[0] in tasks}
        if len(last) == len(tasks) and set(last.values()) == {"✓"}:
            break
        assert time.monotonic() < deadline, term.screen()
        time.sleep(0.1)
    term.keys("Escape")
    # A failed task is cleared and re-runs.
    assert flowtui("trigger", "gate", home=home, pipelines=pipelines).returncode == 0
    term.keys("0")
    term.keys("/")  # Now lists every sample's failures and long runs: the operator filters
    term.type("gate")
    term.keys("Enter")
    term.wait_for("filter: gate", "✗ failed")
    flag.write_text("open")
    term.keys("Home")  # the top row: the failure itself (its consequences are listed below it)
    term.wait_for("gate.check  manual")  # the detail under the list names the selected task
    term.keys("c")
    term.wait_for("go back to none", "gate", "check")
    term.keys("y")
    term.keys("1")
    term.keys("/")
    term.type("gate")
    term.keys("Enter")
    term.wait_for("gate")
    deadline = time.monotonic() + 20
    while not any(line.split()[:1] == ["gate"] and "✓" in line for line in
                  term.screen().splitlines()):
        assert time.monotonic() < deadline, term.screen()
        time.sleep(0.1)
    # The log viewer follows output as it is written.
    assert flowtui("trigger", "talker", home=home, pipelines=pipelines).returncode == 0
    term.keys("0")
    term.wait_for("Now")
    open_dag(term, "talker")
    term.wait_for("DAG talker")
    term.keys("l")
    term.wait_for("line 1", "following")
    more.write_text("go")
    term.wait_for("line 3", "following")
    term.wait_for("line 6", timeout=10)


def test_triage_escape_codes_and_speed(setup, tmp_path: Path) -> None:
    term, home, pipelines = setup
    for sample in pipelines.glob("*.yaml"):
        sample.unlink()  # only the failing DAG: the triage path must not depend on the order
    write(pipelines, "nasty.yaml", r"""
        dag_id: nasty
        tasks:
          dump:
            command: >-
              printf 'start\n\033]0;pwned-title\007\n\033]52;c;cHduZWQ=\007\n\033[2J\033[H\033[31mred\n\302\233 c1 csi\nERROR: bad row 17\n'; exit 1
    """)
    assert flowtui("run", "nasty", home=home, pipelines=pipelines).returncode == 1
    started = start_ui(term, home, pipelines)
    term.wait_for("nasty", "✗ failed")
    term.keys("l")  # one key press from launch to the failing task's log
    shown = term.wait_for("log: nasty", "ERROR: bad row 17")  # the log, not Now's excerpt
    elapsed = time.monotonic() - started
    # 2 s plus the pacing of the key presses
    assert elapsed < on_this_machine(2.0 + 0.15 * 2), elapsed
    assert "^[]0;pwned-title^G" in shown
    assert "^[]52;c;cHduZWQ=^G" in shown
    assert "^[[2J^[[H^[[31mred" in shown
    assert "<U+009B> c1 csi" in shown
    title = term.tmux("display-message", "-p", "-t", "t", "#{pane_title}")
    assert "pwned" not in title
    assert "start" in shown  # the screen was not cleared by the task's escape codes
