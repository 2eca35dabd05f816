"""Every CLI command is documented in the README."""
from __future__ import annotations

from pathlib import Path

from flowtui.cli import build_parser, command_names

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_command_is_in_the_readme() -> None:
    commands = [f"flowtui {name}" for name in command_names(build_parser())]
    assert len(commands) >= 15
    missing = [c for c in commands if c not in README]
    assert not missing, missing


_KEY_NAMES = {"question_mark": "?", "slash": "/", "colon": ":", "escape": "esc",
              "left_square_bracket": "[", "right_square_bracket": "]", "pageup": "PgUp",
              "pagedown": "PgDn", "home": "Home", "end": "End", "left": "←", "right": "→",
              "up": "↑", "down": "↓"}


def test_every_key_binding_is_in_the_readme() -> None:
    """What the footer and ? promise is documented: every described key of every screen."""
    from flowtui.app.backfills_screen import BackfillsScreen
    from flowtui.app.dag_screen import DagScreen
    from flowtui.app.datasets_screen import DatasetsScreen
    from flowtui.app.graph_view import GraphView
    from flowtui.app.lists import (AlertsScreen, DagsScreen, NowScreen, RunnerScreen,
                                   RunsScreen, SlaScreen)
    from flowtui.app.log_screen import LogScreen
    from flowtui.app.task_screen import TaskScreen

    section = README[README.index("## The terminal UI"):README.index("## Commands")]
    missing = set()
    for screen in (NowScreen, DagsScreen, RunsScreen, AlertsScreen, SlaScreen, RunnerScreen,
                   BackfillsScreen, DatasetsScreen, DagScreen, TaskScreen, LogScreen,
                   GraphView):
        for binding in screen.BINDINGS:
            if not getattr(binding, "description", ""):
                continue
            for key in binding.key.split(","):
                name = _KEY_NAMES.get(key, key)
                if f"`{name}`" not in section and not (name.isdigit() and "`0`-`7`" in section):
                    missing.add(f"{screen.__name__}: {name} ({binding.description})")
    assert not missing, sorted(missing)
