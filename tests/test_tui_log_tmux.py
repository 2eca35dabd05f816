"""The log viewer in a real terminal at 80x24: from ``flowtui`` to the buried real error line,
and ``o`` handing the log to ``$PAGER`` and getting the terminal back."""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import flowtui, on_this_machine, write
from test_tmux import Terminal, pytestmark  # noqa: F401  (skipped without tmux)

REAL_ERROR = "could not connect to server: Connection refused"
SCRIPT = """
import sys
print("INFO config: on_error=abort retries=3")
print("INFO batch done: rows=5000 errors=0")
print({error!r})
for i in range(2000):
    print(f"INFO noise {{i}} errors=0 on_error=abort, 0 failed")
sys.exit(1)
"""


@pytest.fixture
def term(home: Path, pipelines: Path, tmp_path: Path) -> Iterator[Terminal]:
    script = tmp_path / "buried.py"
    script.write_text(SCRIPT.format(error=REAL_ERROR))
    write(pipelines, "buried.yaml", f"""
        dag_id: buried
        tasks:
          load: {{command: '{sys.executable} {script}'}}
    """)
    assert flowtui("run", "buried", home=home, pipelines=pipelines).returncode == 1
    terminal = Terminal(f"flowtui-log-{os.getpid()}-{time.monotonic_ns()}", 80, 24)
    yield terminal
    terminal.close()


def launch(term: Terminal, home: Path, pipelines: Path, env: str = "") -> None:
    term.type(f"{env}{sys.executable} -P -m flowtui --home {home} --pipelines {pipelines}")
    term.keys("Enter")
    term.wait_for("buried", "failed")


def test_l_then_e_shows_the_buried_real_error_at_80x24(term: Terminal, home: Path,
                                                       pipelines: Path) -> None:
    launch(term, home, pipelines)
    term.keys("l")
    term.wait_for("log: buried", "INFO noise 1999")
    started = time.monotonic()
    term.keys("e")
    shown = term.wait_for(REAL_ERROR, "error line (failure)  paused (F follows)", timeout=5)
    assert time.monotonic() - started < on_this_machine(2.0), shown
    assert "log: buried" in shown  # in the log viewer, not a pane of another screen
    assert all(len(line) <= 80 for line in shown.splitlines())


def test_o_opens_the_pager_and_comes_back(term: Terminal, home: Path, pipelines: Path,
                                          tmp_path: Path) -> None:
    marker = tmp_path / "pager-ran"
    pager = tmp_path / "pager.sh"
    pager.write_text(f"#!/bin/sh\necho \"$@\" > {marker}\n")
    pager.chmod(0o755)
    launch(term, home, pipelines, env=f"PAGER='{pager} --flag' ")
    term.keys("l")
    term.wait_for("log: buried", "INFO noise 1999")
    term.keys("o")
    deadline = time.monotonic() + 10
    while not (marker.exists() and marker.read_text().strip()):
        assert time.monotonic() < deadline, term.screen()
        time.sleep(0.1)
    args = marker.read_text().split()
    assert args[0] == "--flag" and args[1].endswith("/load/1.log") and Path(args[1]).exists()
    term.wait_for("log: buried", "INFO noise 1999")  # the app is back and answers keys
    term.keys("y")
    term.wait_for("copied the log's path")
