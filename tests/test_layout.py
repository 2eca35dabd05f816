"""Packaging and layering promises: imports, the schema's migration list, the version."""
from __future__ import annotations

import subprocess
import sys

from flowtui import __version__


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
