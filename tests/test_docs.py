"""Every CLI command is documented in the README."""
from __future__ import annotations

from pathlib import Path

from flowtui.cli import build_parser

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _commands() -> list[str]:
    parser = build_parser()
    found = []
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for name, sub in action.choices.items():
            nested = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
            if nested:
                found += [f"flowtui {name} {child}" for child in nested[0].choices]
            else:
                found.append(f"flowtui {name}")
    return found


def test_every_command_is_in_the_readme() -> None:
    commands = _commands()
    assert len(commands) >= 15
    missing = [c for c in commands if c not in README]
    assert not missing, missing
