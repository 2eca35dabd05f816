"""The CLI as a user drives it: concurrent processes on one home, following a live log."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from conftest import flowtui, write


def test_concurrent_runs_and_readers_share_the_store(home: Path, pipelines: Path) -> None:
    tasks = "\n".join(f"  t{i}: {{command: 'true'{', deps: [t' + str(i - 1) + ']' if i % 5 else ''}}}"
                      for i in range(60))
    write(pipelines, "busy.yaml", "dag_id: busy\ntasks:\n" + tasks + "\n")
    argv = [sys.executable, "-P", "-m", "flowtui", "--home", str(home), "--pipelines", str(pipelines)]
    writers = [subprocess.Popen([*argv, "run", "busy"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(3)]
    reads = 0
    # Readers start once the home has a database (before that, one line says there is none).
    deadline = time.monotonic() + 60
    while not (home / "flowtui.db").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    while any(w.poll() is None for w in writers):
        listed = subprocess.run([*argv, "runs", "list", "--json"], capture_output=True, text=True)
        assert listed.returncode == 0, listed.stderr
        json.loads(listed.stdout)
        reads += 1
    for w in writers:
        out, err = w.communicate()
        assert w.returncode == 0, err
        assert "locked" not in err
    runs = json.loads(flowtui("runs", "list", "--json", home=home).stdout)
    assert len(runs) == 3 and {r["state"] for r in runs} == {"success"}
    assert len({r["run_id"] for r in runs}) == 3
    assert reads >= 1


def test_logs_follow_prints_until_the_try_ends(home: Path, pipelines: Path) -> None:
    write(pipelines, "slow.yaml", """
        dag_id: slow
        tasks:
          talk:
            command: for i in 1 2 3 4; do echo "line $i"; sleep 0.3; done
    """)
    argv = [sys.executable, "-P", "-m", "flowtui", "--home", str(home), "--pipelines", str(pipelines)]
    run = subprocess.Popen([*argv, "run", "slow"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        listed = subprocess.run([*argv, "tasks", "list", "slow", "latest", "--json"],
                                capture_output=True, text=True)
        if listed.returncode == 0 and json.loads(listed.stdout)[0]["state"] == "running":
            break
        time.sleep(0.05)
    follow = subprocess.run([*argv, "logs", "slow", "latest", "talk", "--follow"],
                            capture_output=True, text=True, timeout=20)
    assert run.wait(timeout=20) == 0
    assert follow.returncode == 0
    assert follow.stdout.splitlines() == ["line 1", "line 2", "line 3", "line 4"]


def test_logs_escape_control_characters_on_a_terminal_only(home: Path, pipelines: Path) -> None:
    from flowtui.runner.text import visible

    text = "title \x1b]0;pwned\x07 clip \x1b]52;c;aGk=\x07 c1 \x9b2J done"
    shown = visible(text)
    assert "\x1b" not in shown and "\x07" not in shown and "\x9b" not in shown
    assert "^[]0;pwned^G" in shown and "<U+009B>2J" in shown


def test_every_command_has_exactly_one_handler() -> None:
    from flowtui.cli import build_parser, command_names, handlers

    parser = build_parser()
    names = command_names(parser)
    table = handlers()
    assert sorted(names) == sorted(table), set(names) ^ set(table)
    assert all(callable(handler) for handler in table.values())
    # What a command line parses to is the key of its handler.
    assert parser.parse_args([]).command_name == "ui"
    assert parser.parse_args(["dags", "unpause", "d", "--dry-run"]).command_name == "dags unpause"
    assert parser.parse_args(["alerts", "ack", "3"]).command_name == "alerts ack"
    assert parser.parse_args(["logs", "d", "latest", "t"]).command_name == "logs"
