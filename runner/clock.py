"""The one clock: wall time for records, and ISO rendering in a timezone."""
from __future__ import annotations

import datetime as dt
import time
from zoneinfo import ZoneInfo

now = time.time


def iso(ts: float | None, tz: str | dt.tzinfo = "UTC") -> str | None:
    """ISO 8601 with offset, to the second (or the microsecond when it has a fraction)."""
    if ts is None:
        return None
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    moment = dt.datetime.fromtimestamp(ts, zone)
    if moment.microsecond == 0:
        return moment.isoformat()
    return moment.isoformat(timespec="microseconds")


def local_hms(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))
