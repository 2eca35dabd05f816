"""The 3 a.m. journey in a real terminal at 80x24: the real error on screen with zero keys within
2 s of typing ``flowtui``, and a runner killed with -9 shown as down without any store change."""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest
from conftest import flowtui, on_this_machine, write
from daemon_support import start
from test_tmux import Terminal
from test_tui_oncall import BURIED, REAL_ERROR

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (CI installs it)")


@pytest.fixture
def term() -> Terminal:
    terminal = Terminal(f"flowtui-oncall-{os.getpid()}-{time.monotonic_ns()}", 80, 24)
    yield terminal
    terminal.close()


def test_from_flowtui_to_the_real_error_with_zero_keys_in_2s(term: Terminal, home: Path,
                                                             pipelines: Path) -> None:
    write(pipelines, "crunch.yaml", BURIED)
    assert flowtui("run", "crunch", home=home, pipelines=pipelines).returncode == 1
    term.type(f"{sys.executable} -P -m flowtui --home {home} --pipelines {pipelines} --no-runner")
    started = time.monotonic()
    term.keys("Enter")
    shown = term.wait_for(REAL_ERROR, timeout=10)
    elapsed = time.monotonic() - started - 0.15  # keys() waits 0.15 s after sending Enter
    assert elapsed <= on_this_machine(2.0), f"{elapsed:.2f}s to the error line"
    assert "crunch.transform" in shown
    term.keys("q")


def test_a_runner_killed_with_9_shows_down_in_the_header(term: Terminal, home: Path,
                                                         pipelines: Path, runners: list) -> None:
    write(pipelines, "idle.yaml", "dag_id: idle\ntasks:\n  a: {command: 'true'}\n")
    runner = start(runners, home, pipelines)
    term.type(f"{sys.executable} -P -m flowtui --home {home} --pipelines {pipelines} --no-runner")
    term.keys("Enter")
    term.wait_for("● runner", timeout=15)
    runner.kill9()
    killed = time.monotonic()
    term.wait_for("runner DOWN", timeout=10)
    assert time.monotonic() - killed <= 5.0 + 2.0  # heartbeat interval + 2 s
    term.keys("q")


def test_following_a_log_goes_on_past_a_line_over_512_kb(term: Terminal, home: Path,
                                                         pipelines: Path, tmp_path: Path,
                                                         runners: list) -> None:
    go = tmp_path / "go"
    write(pipelines, "longline.yaml", f"""
        dag_id: longline
        tasks:
          talk:
            command: |
              echo "before the long line"
              head -c 700000 /dev/zero | tr '\\\\0' x; echo
              while [ ! -e {go} ]; do sleep 0.05; done
              echo "after the long line"
              sleep 60
    """)
    start(runners, home, pipelines)
    assert flowtui("trigger", "longline", home=home, pipelines=pipelines).returncode == 0
    term.type(f"{sys.executable} -P -m flowtui --home {home} --pipelines {pipelines} --no-runner")
    term.keys("Enter")
    term.wait_for("● runner", timeout=15)
    term.keys("1")
    term.wait_for("longline")
    term.keys("/")
    term.type("longline")
    term.keys("Enter", "Enter")
    term.wait_for("view: grid")
    term.keys("l")
    term.wait_for("line continues", timeout=10)  # the long line, cut with its length
    go.touch()
    term.wait_for("after the long line", timeout=10)  # following went on past it
    term.keys("q")
