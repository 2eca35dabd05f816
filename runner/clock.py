"""The one clock: wall time for records and timers, the loop's wait, and ISO rendering.

Product code takes a ``Clock`` (or its ``now``) instead of calling ``time.time``; tests pass a
``ManualClock`` and move time instead of sleeping to reach a schedule, a retry or an escalation.
"""
from __future__ import annotations

import datetime as dt
import selectors
import threading
import time
from zoneinfo import ZoneInfo


class Clock:
    """Wall time, and the wait of an event loop until its next deadline."""

    def now(self) -> float:
        return time.time()

    def select(self, selector: selectors.BaseSelector, timeout: float,
               *, busy: bool = True, skip: float | None = None) -> list:
        """Wait on ``selector`` for up to ``timeout`` seconds of this clock's time. ``busy``
        says real work (a process) is in flight, so time may not be skipped; ``skip`` is how
        far a clock that skips idle time may jump (past routine wake-ups such as heartbeats,
        which then happen once, late)."""
        return selector.select(timeout)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


SYSTEM = Clock()


class ManualClock(Clock):
    """Time that moves only when told to (``advance``/``set``), or, with ``autojump``, jumps to
    the next deadline whenever a loop waits with nothing in flight: a retry five minutes away
    comes at once, while a running process still takes its real time."""

    def __init__(self, start: float | None = None, *, autojump: bool = False,
                 idle: float = 0.002) -> None:
        self._now = time.time() if start is None else start
        self._base = time.monotonic()
        self.autojump = autojump
        self.idle = idle
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            # Real time flows on top of the driven time, so processes and deadlines agree.
            return self._now + (time.monotonic() - self._base)

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
        return self.now()

    def set(self, when: float) -> None:
        with self._lock:
            self._now = when - (time.monotonic() - self._base)

    def select(self, selector: selectors.BaseSelector, timeout: float,
               *, busy: bool = True, skip: float | None = None) -> list:
        if not self.autojump:
            return selector.select(min(timeout, 0.05))  # time moves from elsewhere: look again
        if busy or timeout <= self.idle:
            return selector.select(timeout)
        events = selector.select(self.idle)
        if not events:
            self.advance(max(0.0, max(timeout, skip or 0.0) - self.idle))
        return events

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)


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
