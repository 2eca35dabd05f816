"""Cron schedules in a DAG's timezone, and Airflow's data intervals.

Cron is evaluated on local wall-clock time. Each wall time is turned into one instant: a wall
time that a spring-forward gap skips is moved forward by the gap, and a wall time that a
fall-back repeats is taken at its first occurrence. So DST neither skips nor doubles a run.

That mapping is not monotonic around a gap (02:30 moves to 03:30 CEST, after the real 03:00), so
the fire instants are defined by one forward walk that drops an instant not later than the last
one; every query, backwards ones included, is answered from that walk, never from a backward
cron walk that would see a different sequence.
"""
from __future__ import annotations

import copy
import datetime as dt
import functools
import math
from collections.abc import Iterator
from typing import Any
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from flowtui.runner.loader import PRESETS
from flowtui.runner.model import DagSpec

UTC = dt.timezone.utc
GAP_NOTE = "DST skips this wall time: the run fires at the end of the gap"
REPEAT_NOTE = "DST repeats this wall time: the run fires at its first occurrence"
# Logical dates flowtui accepts: any wall time on these days is an instant that every timezone
# (offsets under a day) can still write as a date.
FIRST_DAY, LAST_DAY = dt.date(1, 1, 2), dt.date(9999, 12, 30)
DATE_RANGE = f"use a date from {FIRST_DAY} to {LAST_DAY}"
_DAY = 86400.0
_EARLIEST = dt.datetime(1, 1, 2, tzinfo=UTC).timestamp()


@dataclass(frozen=True, slots=True)
class Interval:
    start: float  # the logical date
    end: float    # when the run is created


def in_date_range(moment: dt.datetime, timezone: str) -> bool:
    """Whether an aware moment is a logical date flowtui can store and write, in ``timezone``
    and in UTC: its own date is in the range and neither of those conversions overflows."""
    if not FIRST_DAY <= moment.date() <= LAST_DAY:
        return False
    try:
        for zone in (UTC, ZoneInfo(timezone)):
            moment.astimezone(zone)
    except (OverflowError, ValueError):
        return False
    return True


def _below(instant: float) -> float:
    """The float just below ``instant``: walks from it include ``instant`` (at year 9999,
    ``instant - 1e-6`` is ``instant`` itself)."""
    return math.nextafter(instant, -math.inf)


def _instant(naive: dt.datetime, tz: ZoneInfo) -> float:
    return naive.replace(tzinfo=tz, fold=0).timestamp()


def _offset(ts: float, tz: ZoneInfo) -> float:
    try:
        offset = dt.datetime.fromtimestamp(ts, tz).utcoffset()
    except (OverflowError, ValueError, OSError):
        return 0.0
    return offset.total_seconds() if offset is not None else 0.0


def _shift(tz: ZoneInfo, at: float) -> float:
    """How far a UTC offset change near ``at`` can move a wall time: a forward walk that must
    not miss a gap-shifted fire starts this much earlier (0 away from any change)."""
    here = _offset(at, tz)
    return max(abs(here - _offset(at - 2 * _DAY, tz)), abs(_offset(at + 2 * _DAY, tz) - here))


def _naive(ts: float, tz: ZoneInfo) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz).replace(tzinfo=None)


def _skipped(naive: dt.datetime, tz: ZoneInfo) -> bool:
    """A wall time a spring-forward gap skips: it does not survive a round trip."""
    return _naive(_instant(naive, tz), tz) != naive


def _repeated(naive: dt.datetime, tz: ZoneInfo) -> bool:
    first = naive.replace(tzinfo=tz, fold=0)
    return first.utcoffset() != naive.replace(tzinfo=tz, fold=1).utcoffset() \
        and not _skipped(naive, tz)


@functools.lru_cache(maxsize=4096)
def _parsed(schedule: str) -> Any:
    """The schedule's cron, parsed once: parsing is most of a short walk's cost (a daemon asks
    each DAG's schedule many times; a backfill's plan, once a date)."""
    from croniter import croniter

    return croniter(PRESETS.get(schedule, schedule), 0.0)


def _cron(schedule: str, start: dt.datetime) -> Any:
    """A walker of the schedule's cron from ``start`` (wall time), of its own."""
    walker = copy.copy(_parsed(schedule))
    walker.set_current(start, force=True)
    return walker


def _fires(schedule: str, timezone: str, after: float) -> Iterator[tuple[float, str]]:
    """The one definition of a schedule's fire instants: (instant, DST note) strictly after
    ``after``, in order, until the cron has no more fires or time leaves datetime's range."""
    tz = ZoneInfo(timezone)
    try:
        # A minute early too: a naive datetime rounds to the microsecond, so a start just
        # below a fire time could otherwise round onto it and lose it.
        itr = _cron(schedule, _naive(after - _shift(tz, after) - 60, tz))
    except (OverflowError, ValueError, OSError):
        return
    last = after
    in_gap = False
    while True:
        try:
            naive = itr.get_next(dt.datetime)
            instant = _instant(naive, tz)
            skipped = _skipped(naive, tz)
        except (OverflowError, ValueError, OSError):
            return  # no fire left before the year 10000 (or none at all, e.g. 30 February)
        # Of the wall times one gap skips, the first lands at the end of the gap; the later
        # ones land on instants that are ordinary fires of their own (or duplicates).
        moved = skipped and not in_gap
        in_gap = skipped
        if instant <= last:
            continue  # before the start, or a gap time that lands on an existing instant
        last = instant
        yield instant, GAP_NOTE if moved else REPEAT_NOTE if _repeated(naive, tz) else ""


def fire_times(schedule: str, timezone: str, after: float) -> Iterator[float]:
    """Instants (seconds since the epoch) the cron fires strictly after ``after``, in order."""
    return (instant for instant, _ in _fires(schedule, timezone, after))


def fire_times_local(schedule: str, timezone: str, after: float, count: int) -> list[tuple[float, str]]:
    """The next ``count`` fire instants with a DST note for each wall time."""
    out: list[tuple[float, str]] = []
    for fire in _fires(schedule, timezone, after):
        if len(out) >= count:
            break
        out.append(fire)
    return out


def last_fires(schedule: str, timezone: str, until: float, count: int, *,
               inclusive: bool) -> list[float]:
    """The last ``count`` fire instants before ``until`` (or at it, when ``inclusive``), oldest
    first; fewer when the schedule has no more before."""
    tz = ZoneInfo(timezone)
    margin = _shift(tz, until)
    try:
        back = _cron(schedule, _naive(until - margin, tz))
    except (OverflowError, ValueError, OSError):
        return []
    steps, exhausted = count + 1, False
    while True:
        # Step the cron back on wall times to find a safe place to start the forward walk.
        try:
            for _ in range(steps):
                begin = _instant(back.get_prev(dt.datetime), tz) - margin - 1
        except (OverflowError, ValueError, OSError):
            begin, exhausted = float("-inf"), True
        fires: list[float] = []
        for fire in fire_times(schedule, timezone, max(begin, _EARLIEST)):
            if fire > until or (fire == until and not inclusive):
                break
            fires.append(fire)
        if len(fires) >= count or exhausted:
            return fires[-count:] if count else []
        steps = count


def previous_fire(schedule: str, timezone: str, before: float) -> float | None:
    """The last fire instant strictly before ``before``."""
    fires = last_fires(schedule, timezone, before, 1, inclusive=False)
    return fires[0] if fires else None


def intervals_between(dag: DagSpec, after_start: float | None, now: float) -> list[Interval]:
    """Every complete interval whose start is after ``after_start`` (or at/after start_date)
    and whose end is at or before ``now``; respects ``end_date``."""
    if not dag.schedule:
        return []
    origin = dag.start_date if dag.start_date is not None else now
    begin = _below(origin) if after_start is None else after_start
    out: list[Interval] = []
    times = fire_times(dag.schedule, dag.timezone, begin)
    previous = next(times, None)
    if after_start is None and dag.start_date is not None and previous is not None \
            and previous < dag.start_date:
        previous = next(times, None)
    if previous is None:
        return []
    for fire in times:
        if fire > now:
            break
        if dag.end_date is not None and previous > dag.end_date:
            break
        out.append(Interval(previous, fire))
        previous = fire
    return out


def next_interval_end(dag: DagSpec, last_start: float | None, now: float) -> float | None:
    """When the next scheduled run is due: the end of the first interval that ends after
    ``now``, starts at or after ``start_date`` and after ``last_start``; None when there is no
    schedule or ``end_date`` has passed. (Intervals already due are ``due_intervals``' job.)"""
    if not dag.schedule:
        return None
    floor = _below(dag.start_date) if dag.start_date is not None else -math.inf
    if last_start is not None:
        floor = max(floor, math.nextafter(last_start, math.inf))
    times = fire_times(dag.schedule, dag.timezone, max(now, floor))
    end = next(times, None)
    if end is None:
        return None
    start = previous_fire(dag.schedule, dag.timezone, end)
    while start is None or start < floor:
        start, end = end, next(times, None)
        if end is None:
            return None
    if dag.end_date is not None and start > dag.end_date:
        return None
    return end


def latest_interval(dag: DagSpec, now: float) -> Interval | None:
    """The most recent complete interval (what ``catchup: false`` creates)."""
    if not dag.schedule:
        return None
    ends = last_fires(dag.schedule, dag.timezone, now, 2, inclusive=True)
    if len(ends) < 2:
        return None
    start, end = ends
    if dag.start_date is not None and start < dag.start_date:
        return None
    if dag.end_date is not None and start > dag.end_date:
        return None
    return Interval(start, end)
