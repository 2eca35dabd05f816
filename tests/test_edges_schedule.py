"""Schedules on DST nights, checked as properties over several crons and two timezones.

Spring forward: Berlin skips 02:00-03:00 on 2026-03-29, New York on 2026-03-08. Fall back: Berlin
repeats 02:00-03:00 on 2026-10-25, New York 01:00-02:00 on 2026-11-01. The daemon is driven as it
runs (create what is due, sleep until ``next_interval_end``) with an explicit clock.
"""
from __future__ import annotations

import datetime as dt
import itertools
import math
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import flowtui, write
from flowtui.runner.daemon import due_intervals
from flowtui.runner.loader import load_yaml_text
from flowtui.runner.model import DagSpec
from flowtui.runner.schedule import (
    GAP_NOTE,
    fire_times,
    fire_times_local,
    intervals_between,
    latest_interval,
    next_interval_end,
    previous_fire,
)

SCHEDULES = ("*/15 * * * *", "30 2 * * *", "0 * * * *", "@daily")
# (timezone, spring-forward day, fall-back day, wall hour the gap starts at)
NIGHTS = (("Europe/Berlin", dt.date(2026, 3, 29), dt.date(2026, 10, 25), 2),
          ("America/New_York", dt.date(2026, 3, 8), dt.date(2026, 11, 1), 2))
# Where the interval that contains the spring gap ends, as a local wall time on the gap day
# (None: the next midnight). A fire time in the gap moves forward by the gap's length.
GAP_END = {"*/15 * * * *": (3, 0), "0 * * * *": (3, 0), "30 2 * * *": (3, 30), "@daily": None}
CASES = [(s, tz, day) for s in SCHEDULES for tz, spring, autumn, _ in NIGHTS
         for day in (spring, autumn)]


def make_dag(schedule: str, timezone: str, start: dt.date, *, catchup: bool) -> DagSpec:
    text = (f'dag_id: d\nschedule: "{schedule}"\ntimezone: {timezone}\n'
            f"catchup: {'true' if catchup else 'false'}\nstart_date: \"{start.isoformat()}\"\n"
            'tasks:\n  t: {command: "true"}\n')
    dags, errors = load_yaml_text("/pipelines/d.yaml", text, "d")
    assert not errors, [str(e) for e in errors]
    return dags[0]


def midnight(day: dt.date, timezone: str) -> float:
    return dt.datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(timezone)).timestamp()


def window(day: dt.date, timezone: str) -> tuple[float, float]:
    """From the midnight before the night to 03:00 two days later."""
    return midnight(day, timezone), midnight(day + dt.timedelta(days=2), timezone) + 3 * 3600


def drive(dag: DagSpec, begin: float, end: float) -> list[tuple[float, float, float]]:
    """Run the daemon's scheduling loop on an explicit clock: (start, end, created at)."""
    now, last, created = begin, None, []
    while True:
        for interval in due_intervals(dag, last, now):
            created.append((interval.start, interval.end, now))
            last = interval.start
        due = next_interval_end(dag, last, now)
        assert due is not None and due > now
        if due > end:
            return created
        now = due


def transition(day: dt.date, timezone: str) -> float:
    """The instant the UTC offset changes on ``day``."""
    lo, hi = midnight(day, timezone), midnight(day + dt.timedelta(days=1), timezone)
    tz = ZoneInfo(timezone)
    offset = dt.datetime.fromtimestamp(lo, tz).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if dt.datetime.fromtimestamp(mid, tz).utcoffset() == offset:
            lo = mid
        else:
            hi = mid
    return hi


@pytest.mark.parametrize("schedule,timezone,day", CASES)
def test_intervals_tile_time_and_every_query_agrees(schedule: str, timezone: str,
                                                    day: dt.date) -> None:
    begin, end = window(day, timezone)
    dag = make_dag(schedule, timezone, day, catchup=True)
    intervals = intervals_between(dag, None, end)
    assert len(intervals) >= 2
    # No gap, no overlap: each interval starts where the previous ended, and they cover the
    # whole time from the first fire to the last one.
    for a, b in itertools.pairwise(intervals):
        assert a.end == b.start, (a, b)
    assert all(i.end > i.start for i in intervals)
    assert sum(i.end - i.start for i in intervals) == intervals[-1].end - intervals[0].start
    fires = [intervals[0].start] + [i.end for i in intervals]
    walked = itertools.takewhile(lambda f: f <= end, fire_times(schedule, timezone, begin - 1e-6))
    assert fires == list(walked)[:len(fires)]
    # Backward queries see the same sequence as the forward walk.
    for earlier, later in itertools.pairwise(fires):
        assert previous_fire(schedule, timezone, later) == earlier
        assert previous_fire(schedule, timezone, (earlier + later) / 2) == earlier
    # catchup false and catchup true agree on the latest interval at every moment of the night.
    lazy = make_dag(schedule, timezone, day, catchup=False)
    t0 = transition(day, timezone)
    moments = [t0 + k * 300 for k in range(-24, 25)] + fires[1:]
    for now in moments:
        complete = [i for i in intervals if i.end <= now]
        assert latest_interval(lazy, now) == (complete[-1] if complete else None), now


@pytest.mark.parametrize("schedule,timezone,day", CASES)
def test_the_daemon_creates_every_interval_at_its_end_with_or_without_catchup(
        schedule: str, timezone: str, day: dt.date) -> None:
    begin, end = window(day, timezone)
    start = day
    expected = [(i.start, i.end, i.end)
                for i in intervals_between(make_dag(schedule, timezone, start, catchup=True),
                                           None, end)]
    for catchup in (True, False):
        created = drive(make_dag(schedule, timezone, start, catchup=catchup), begin, end)
        assert created == expected, (catchup, [
            tuple(dt.datetime.fromtimestamp(t, ZoneInfo(timezone)).strftime("%H:%M%z")
                  for t in row) for row in created if row not in expected])


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("timezone,spring,autumn,gap_hour", NIGHTS)
def test_the_interval_over_the_gap_ends_at_the_end_of_the_gap(
        schedule: str, timezone: str, spring: dt.date, autumn: dt.date, gap_hour: int) -> None:
    tz = ZoneInfo(timezone)
    dag = make_dag(schedule, timezone, spring - dt.timedelta(days=1), catchup=True)
    gap = transition(spring, timezone)
    [over] = [i for i in intervals_between(dag, None, window(spring, timezone)[1])
              if i.start < gap <= i.end]
    wall = GAP_END[schedule]
    if wall is None:
        assert over.end == midnight(spring + dt.timedelta(days=1), timezone)
    else:
        assert over.end == dt.datetime(spring.year, spring.month, spring.day, *wall,
                                       tzinfo=tz).timestamp()
        assert dt.datetime.fromtimestamp(over.end, tz).utcoffset() \
            > dt.datetime.fromtimestamp(over.start, tz).utcoffset()
    # Fall back: every wall time fires once, at its first occurrence.
    begin, end = window(autumn, timezone)
    walls = [dt.datetime.fromtimestamp(f, tz).replace(tzinfo=None)
             for f in itertools.takewhile(lambda f: f <= end, fire_times(schedule, timezone, begin))]
    assert len(walls) == len(set(walls))
    assert walls == sorted(walls)


@pytest.mark.parametrize("timezone,spring,autumn,gap_hour", NIGHTS)
def test_only_the_fire_moved_out_of_the_gap_is_flagged(
        timezone: str, spring: dt.date, autumn: dt.date, gap_hour: int) -> None:
    tz = ZoneInfo(timezone)
    after = dt.datetime(spring.year, spring.month, spring.day, gap_hour - 1, 5,
                        tzinfo=tz).timestamp()
    fires = fire_times_local("*/15 * * * *", timezone, after, 8)
    flagged = [dt.datetime.fromtimestamp(t, tz).strftime("%H:%M") for t, n in fires if n]
    assert flagged == ["03:00"]
    assert [n for _, n in fires if n] == [GAP_NOTE]


def _future_spring(year: int, timezone: str) -> dt.date:
    """The spring-forward day of ``year`` in ``timezone``."""
    tz = ZoneInfo(timezone)
    day = dt.date(year, 3, 1)
    while dt.datetime(day.year, day.month, day.day, 12, tzinfo=tz).utcoffset() == \
            dt.datetime(year, 1, 1, tzinfo=tz).utcoffset():
        day += dt.timedelta(days=1)
    return day


@pytest.mark.parametrize("timezone", ["Europe/Berlin", "America/New_York"])
def test_dags_show_flags_only_the_end_of_the_gap(home: Path, pipelines: Path,
                                                 timezone: str) -> None:
    year = dt.date.today().year + 2  # ahead of the clock: the lines follow the start_date
    day = _future_spring(year, timezone)
    offset = dt.datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(timezone)).strftime("%z")
    write(pipelines, "quarter.yaml", f"""
        dag_id: quarter
        schedule: "*/15 * * * *"
        timezone: {timezone}
        start_date: "{day.isoformat()}T01:00:00{offset[:3]}:{offset[3:]}"
        tasks:
          t: {{command: "true"}}
    """)
    result = flowtui("dags", "show", "quarter", home=home, pipelines=pipelines)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    fires = [l.strip() for l in lines[lines.index("next fire times:") + 1:] if l.strip()]
    assert [l[11:16] for l in fires] == ["01:15", "01:30", "01:45", "03:00", "03:15"], fires
    assert [l[11:16] for l in fires if "DST" in l] == ["03:00"], fires


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_a_walk_from_just_below_a_fire_time_yields_it_first(schedule: str) -> None:
    """Float instants just below a fire round onto it as datetimes; the fire is still found,
    in 2026 and at the far end of the range."""
    for timezone, spring, _, _ in NIGHTS:
        for year in (2026, 9999):
            begin = midnight(dt.date(year, 12, 1) if year == 9999 else spring, timezone) - 3600
            fire = next(fire_times(schedule, timezone, begin))
            for below in (math.nextafter(fire, -math.inf), fire - 0.4):
                assert next(fire_times(schedule, timezone, below)) == fire, (timezone, year)
