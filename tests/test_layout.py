"""Packaging and layering promises: imports, the schema's migration list, the version."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flowtui import __version__

ROOT = Path(__file__).resolve().parent.parent


def test_runner_and_store_never_import_textual() -> None:
    code = ("import sys, flowtui.runner.engine, flowtui.runner.loader, flowtui.runner.runs, "
            "flowtui.store, flowtui.commands; "
            "print('textual' in sys.modules)")
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_authoring_api_is_importable() -> None:
    from flowtui import DAG, Bash, task

    assert callable(DAG) and callable(Bash) and callable(task)


def test_migration_names_match_the_schema() -> None:
    from flowtui.store.schema import migrations
    from flowtui.store.version import MIGRATION_NAMES, MIGRATION_SET

    assert migrations.name == MIGRATION_SET
    assert {m.name for m in migrations._migrations} == MIGRATION_NAMES


def test_version_command() -> None:
    out = subprocess.run([sys.executable, "-P", "-m", "flowtui", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == f"flowtui {__version__}"


@pytest.mark.parametrize("runner", [
    ["-m", "pytest"],  # puts the repository root first on sys.path
    ["-P", "-c", "import sys, pytest; sys.exit(pytest.console_main())"],  # as `pytest` does
], ids=["python -m pytest", "pytest"])
def test_pytest_collects_from_the_repository_root(runner: list[str]) -> None:
    """The top-level folders never shadow the installed package, however pytest is started."""
    # addopts is emptied so that its -q and this one do not add up to counts without names.
    out = subprocess.run([sys.executable, *runner, "--collect-only", "-q", "-o", "addopts=",
                          "-p", "no:cacheprovider", "tests/test_layout.py"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "tests/test_layout.py::test_version_command" in out.stdout
