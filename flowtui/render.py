"""Text and JSON renderings shared by the CLI: glyphs, rows, safe terminal text."""
from __future__ import annotations

import re
import time
from typing import Any

from flowtui.runner.clock import iso
from flowtui.store.models import Run, TaskInstance

GLYPHS = {
    "none": "·", "scheduled": "◌", "queued": "◌", "running": "▶", "up_for_retry": "↻",
    "up_for_reschedule": "⏲", "success": "✓", "failed": "✗", "upstream_failed": "⇡",
    "skipped": "⊘",
}
COLOURS = {
    "none": "dim", "scheduled": "cyan", "queued": "cyan", "running": "bright_blue",
    "up_for_retry": "yellow", "up_for_reschedule": "cyan", "success": "green", "failed": "red",
    "upstream_failed": "dark_orange", "skipped": "magenta",
}

# C0 controls (but tab and newline), DEL, and C1 controls (0x80-0x9f) become visible text.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]")


def visible(text: str) -> str:
    """Make control characters visible (ESC -> ``^[``), so output cannot drive a terminal."""
    def repl(match: re.Match[str]) -> str:
        code = ord(match.group())
        if code < 0x20:
            return "^" + chr(code + 64)
        if code == 0x7F:
            return "^?"
        return f"<U+{code:04X}>"
    return _CONTROL.sub(repl, text)


def run_json(run: Run) -> dict[str, Any]:
    return {
        "dag_id": run.dag_id,
        "run_id": run.run_id,
        "run_type": run.run_type,
        "logical_date": iso(run.logical_date),
        "data_interval_start": iso(run.data_interval_start),
        "data_interval_end": iso(run.data_interval_end),
        "state": run.state,
        "start_date": iso(run.start_date),
        "end_date": iso(run.end_date),
    }


def task_json(ti: TaskInstance) -> dict[str, Any]:
    return {
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "state": ti.state,
        "try_number": ti.try_number,
        "max_tries": ti.max_tries,
        "start_date": iso(ti.start_date),
        "end_date": iso(ti.end_date),
        "duration": None if ti.duration is None else round(ti.duration, 6),
        "exit_code": ti.exit_code,
        "pid": ti.pid,
        "reason": ti.reason,
    }


def local_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def table(rows: list[list[str]], headers: list[str]) -> str:
    """A plain aligned text table (no colour: it is also what scripts and pipes read)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
    return "\n".join(lines)
