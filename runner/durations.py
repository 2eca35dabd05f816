"""Parsing of durations (``90s``, ``5m``, ``1h30m``, ``0.5``) into seconds."""
from __future__ import annotations

import math
import re

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
# Ten years: longer is a typo, and far longer overflows timers and date arithmetic.
MAX_SECONDS = 3650 * 86400.0
_ACCEPTED = "use seconds (30) or a string like 90s, 5m, 2h, 1h30m"


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like ``90s``, ``5m``, ``2h``, ``1d``, ``1h30m``.

    Raises ``ValueError`` with a sentence that says what is accepted.
    """
    seconds = _seconds(value)
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    if seconds is None or math.isnan(seconds):
        raise ValueError(f"{shown} is not a duration; {_ACCEPTED}")
    if seconds < 0:
        raise ValueError(f"{shown} is negative; a duration must be 0 or more")
    if seconds > MAX_SECONDS:
        raise ValueError(f"{shown} is longer than the maximum duration of 3650d (10 years)")
    return seconds


def _seconds(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return float(max(-1, min(value, 2 * int(MAX_SECONDS))))  # no float overflow
    if isinstance(value, float):
        return value
    if not isinstance(value, str):
        return None
    text = value.strip().lower().replace(" ", "")
    try:
        return float(text)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return total if text and pos == len(text) else None


def format_countdown(seconds: float) -> str:
    """Time left to a deadline or a retry, in whole seconds under a minute (a countdown read
    as "1.00s" looks like a duration measured to the hundredth); as a duration above."""
    whole = math.ceil(max(0.0, seconds))
    return f"{whole}s" if whole < 60 else format_duration(whole)


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
