"""Rich text for the TUI: state glyphs in the theme's state colours, safe log text."""
from __future__ import annotations

import time

from rich.text import Text

from flowtui.runner.text import GLYPHS, visible

ERROR_WORDS = ("error", "exception", "traceback", "fatal", "failed")


def state_colour(app, state: str) -> str:
    variables = app.theme_variables if hasattr(app, "theme_variables") else {}
    return variables.get(f"state-{state}", "") or ""


def state_text(app, state: str, *, name: bool = True) -> Text:
    label = f"{GLYPHS.get(state, '?')} {state}" if name else GLYPHS.get(state, "?")
    return Text(label, style=state_colour(app, state))


def ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "-"
    delta = max(0.0, now - ts)
    if delta < 60:
        return f"{delta:.0f}s ago"
    if delta < 3600:
        return f"{delta / 60:.0f}m ago"
    if delta < 86400:
        return f"{delta / 3600:.1f}h ago"
    return f"{delta / 86400:.1f}d ago"


def clock(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%m-%d %H:%M:%S", time.localtime(ts))


def log_line(raw: str) -> Text:
    """One line of task output: control characters shown as text, errors highlighted."""
    shown = visible(raw.rstrip("\n"))
    text = Text(shown)
    lowered = shown.lower()
    if any(word in lowered for word in ERROR_WORDS):
        text.stylize("bold red")
    elif shown.startswith("::flowtui "):
        text.stylize("dim")
    return text


def short_run(run_id: str) -> str:
    """``manual__2026-11-21T10:45:32+00:00`` -> ``manual 11-21 10:45`` (tables at 80 columns)."""
    kind, _, stamp = run_id.partition("__")
    if len(stamp) >= 16 and stamp[4] == "-" and stamp[10] == "T":
        extra = stamp[25:] if len(stamp) > 25 else ""
        return f"{kind} {stamp[5:10]} {stamp[11:16]}{extra}"
    if len(stamp) >= 10 and stamp[4] == "-" and stamp[7] == "-":  # a dataset's day partition
        return f"{kind} {stamp[5:10]}{stamp[10:]}"
    return run_id


def display_path(path: object) -> str:
    """A path with the user's home folder shown as ``~`` (shorter, and the same on every box)."""
    import os

    text = str(path)
    home = os.path.expanduser("~")
    if home not in ("", "/") and (text == home or text.startswith(home + os.sep)):
        return "~" + text[len(home):]
    return text
