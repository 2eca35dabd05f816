"""Parsing of durations (``90s``, ``5m``, ``1h30m``, ``0.5``) into seconds."""
from __future__ import annotations

import math
import re

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like ``90s``, ``5m``, ``2h``, ``1d``, ``1h30m``.

    Raises ``ValueError`` with a sentence that says what is accepted.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; use seconds (30) or a string like 90s, 5m, 2h, 1h30m")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a duration; use seconds (30) or a string like 90s, 5m, 2h, 1h30m")
        if value < 0:
            raise ValueError(f"{value!r} is negative; a duration must be 0 or more")
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            pass
        else:
            if not math.isfinite(seconds):
                raise ValueError(f"{value!r} is not a duration; use seconds (30) or a string like 90s, 5m, 2h, 1h30m")
            if seconds < 0:
                raise ValueError(f"{value!r} is negative; a duration must be 0 or more")
            return seconds
        pos, total = 0, 0.0
        for match in _PART.finditer(text):
            if match.start() != pos:
                break
            total += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if text and pos == len(text):
            return total
    raise ValueError(f"{value!r} is not a duration; use seconds (30) or a string like 90s, 5m, 2h, 1h30m")


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
