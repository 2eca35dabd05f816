"""Cron schedules in a DAG's timezone, and Airflow's data intervals.

Cron is evaluated on local wall-clock time. Each wall time is turned into one instant: a wall
time that a spring-forward gap skips is moved forward by the gap, and a wall time that a
fall-back repeats is taken at its first occurrence. So DST neither skips nor doubles a run.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from flowtui.runner.loader import PRESETS
from flowtui.runner.model import DagSpec

UTC = dt.timezone.utc


@dataclass(frozen=True, slots=True)
class Interval:
    start: float  # the logical date
    end: float    # when the run is created


def _instant(naive: dt.datetime, tz: ZoneInfo) -> float:
    return naive.replace(tzinfo=tz, fold=0).timestamp()


def wall_time_note(naive: dt.datetime, tz: ZoneInfo) -> str:
    """'' for an ordinary wall time, else why DST makes it special."""
    first = naive.replace(tzinfo=tz, fold=0)
    second = naive.replace(tzinfo=tz, fold=1)
    if first.utcoffset() == second.utcoffset():
        return ""
    roundtrip = dt.datetime.fromtimestamp(first.timestamp(), tz).replace(tzinfo=None)
    if roundtrip != naive:
        return "DST skips this wall time: the run fires at the end of the gap"
    return "DST repeats this wall time: the run fires at its first occurrence"


def fire_times(schedule: str, timezone: str, after: float) -> Iterator[float]:
    """Instants (seconds since the epoch) the cron fires strictly after ``after``, in order."""
    from croniter import croniter

    tz = ZoneInfo(timezone)
    expr = PRESETS.get(schedule, schedule)
    # Start one hour early so a gap shift cannot hide the first fire; filter below.
    start_local = dt.datetime.fromtimestamp(after - 3600, tz).replace(tzinfo=None)
    itr = croniter(expr, start_local)
    last = after
    while True:
        naive = itr.get_next(dt.datetime)
        instant = _instant(naive, tz)
        if instant <= last:
            continue  # before the start, or a gap time that lands on an existing instant
        last = instant
        yield instant


def fire_times_local(schedule: str, timezone: str, after: float, count: int) -> list[tuple[float, str]]:
    """The next ``count`` fire instants with a DST note for each wall time."""
    from croniter import croniter

    tz = ZoneInfo(timezone)
    expr = PRESETS.get(schedule, schedule)
    itr = croniter(expr, dt.datetime.fromtimestamp(after, tz).replace(tzinfo=None))
    out: list[tuple[float, str]] = []
    last = after
    while len(out) < count:
        naive = itr.get_next(dt.datetime)
        instant = _instant(naive, tz)
        if instant <= last:
            continue
        last = instant
        out.append((instant, wall_time_note(naive, tz)))
    return out


def intervals_between(dag: DagSpec, after_start: float | None, now: float) -> list[Interval]:
    """Every complete interval whose start is after ``after_start`` (or at/after start_date)
    and whose end is at or before ``now``; respects ``end_date``."""
    if not dag.schedule:
        return []
    origin = dag.start_date if dag.start_date is not None else now
    begin = origin - 1e-6 if after_start is None else after_start
    out: list[Interval] = []
    times = fire_times(dag.schedule, dag.timezone, begin)
    previous = next(times)
    if after_start is None and dag.start_date is not None and previous < dag.start_date:
        previous = next(times)
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
    floor = dag.start_date - 1e-6 if dag.start_date is not None else float("-inf")
    if last_start is not None:
        floor = max(floor, last_start + 1e-6)
    times = fire_times(dag.schedule, dag.timezone, max(now, floor))
    end = next(times)
    start = previous_fire(dag.schedule, dag.timezone, end)
    while start is None or start < floor:
        start, end = end, next(times)
    if dag.end_date is not None and start > dag.end_date:
        return None
    return end


def previous_fire(schedule: str, timezone: str, before: float) -> float | None:
    """The last fire instant strictly before ``before``."""
    from croniter import croniter

    tz = ZoneInfo(timezone)
    expr = PRESETS.get(schedule, schedule)
    itr = croniter(expr, dt.datetime.fromtimestamp(before, tz).replace(tzinfo=None))
    for _ in range(4):
        instant = _instant(itr.get_prev(dt.datetime), tz)
        if instant < before:
            return instant
    return None


def latest_interval(dag: DagSpec, now: float) -> Interval | None:
    """The most recent complete interval (what ``catchup: false`` creates)."""
    if not dag.schedule:
        return None
    tz_now = now
    # Walk back: the fire before now is the latest end; the one before that its start.
    ends = [t for t in _recent_fires(dag, tz_now)]
    if len(ends) < 2:
        return None
    start, end = ends[-2], ends[-1]
    if dag.start_date is not None and start < dag.start_date:
        return None
    if dag.end_date is not None and start > dag.end_date:
        return None
    return Interval(start, end)


def _recent_fires(dag: DagSpec, now: float) -> list[float]:
    # Look back far enough for monthly and yearly schedules.
    for lookback in (2 * 86400, 40 * 86400, 400 * 86400, 3000 * 86400):
        fires = []
        for t in fire_times(dag.schedule or "", dag.timezone, now - lookback):
            if t > now:
                break
            fires.append(t)
        if len(fires) >= 2:
            return fires[-2:]
    return []
