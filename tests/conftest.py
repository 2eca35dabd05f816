"""Shared fixtures: a temporary home and pipelines folder, kept apart from the user's own."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


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
            timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``flowtui`` command in a subprocess."""
    argv = [sys.executable, "-P", "-m", "flowtui"]
    if home is not None:
        argv += ["--home", str(home)]
    if pipelines is not None:
        argv += ["--pipelines", str(pipelines)]
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=timeout,
                          env=full_env)


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
