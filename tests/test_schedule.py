"""Cron schedules and Airflow's data intervals, with explicit timestamps (no clock, no daemon).

Europe/Berlin in 2026: clocks spring forward on 2026-03-29 (02:00 CET -> 03:00 CEST, so 02:30
does not exist) and fall back on 2026-10-25 (03:00 CEST -> 02:00 CET, so 02:30 happens twice).
"""
from __future__ import annotations

import datetime as dt
import itertools
import re
import time
from pathlib import Path
from zoneinfo import ZoneInfo

from conftest import flowtui, write
from flowtui.runner.loader import load_yaml_text
from flowtui.runner.model import DagSpec
from flowtui.runner.schedule import (
    fire_times,
    fire_times_local,
    intervals_between,
    latest_interval,
    next_interval_end,
)

BERLIN = ZoneInfo("Europe/Berlin")
UTC = dt.UTC
SPRING = dt.date(2026, 3, 29)
AUTUMN = dt.date(2026, 10, 25)


def at(*parts: int, fold: int = 0) -> float:
    """A Berlin wall time as an instant."""
    return dt.datetime(*parts, tzinfo=BERLIN, fold=fold).timestamp()


def local(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, BERLIN)


def dag(schedule: str, *, start_date: str | None = "2026-01-01", end_date: str | None = None,
        catchup: bool = True, timezone: str = "Europe/Berlin") -> DagSpec:
    """A DAG loaded from YAML text, exactly as a pipeline file would define it."""
    lines = ["dag_id: d", f'schedule: "{schedule}"', f"timezone: {timezone}",
             f"catchup: {'true' if catchup else 'false'}"]
    if start_date is not None:
        lines.append(f'start_date: "{start_date}"')
    if end_date is not None:
        lines.append(f'end_date: "{end_date}"')
    lines += ["tasks:", '  t: {command: "true"}']
    dags, errors = load_yaml_text("/pipelines/d.yaml", "\n".join(lines) + "\n", "d")
    assert not errors, [str(e) for e in errors]
    return dags[0]


def first_fires(schedule: str, after: float, until: float) -> list[float]:
    out = []
    for instant in fire_times(schedule, "Europe/Berlin", after):
        if instant > until:
            return out
        out.append(instant)
    raise AssertionError("unreachable")


# -- daily at 02:30 across both changes ------------------------------------------------------
def test_daily_0230_fires_once_per_calendar_day_across_spring_forward() -> None:
    fires = first_fires("30 2 * * *", at(2026, 3, 26), at(2026, 4, 1))
    days = [local(f).date() for f in fires]
    assert days == [dt.date(2026, 3, d) for d in range(26, 32)]  # one per day, none missing
    by_day = {local(f).date(): local(f) for f in fires}
    # The skipped 02:30 fires once, at the end of the gap: 03:30 CEST (01:30 UTC).
    gap_day = by_day[SPRING]
    assert (gap_day.hour, gap_day.minute) == (3, 30)
    assert gap_day.utcoffset() == dt.timedelta(hours=2)
    assert dt.datetime.fromtimestamp(fires[days.index(SPRING)], UTC).strftime("%H:%M") == "01:30"
    for day, moment in by_day.items():
        if day != SPRING:
            assert (moment.hour, moment.minute) == (2, 30), moment
    # Offsets: CET before, CEST from the change on.
    assert by_day[dt.date(2026, 3, 28)].utcoffset() == dt.timedelta(hours=1)
    assert by_day[dt.date(2026, 3, 30)].utcoffset() == dt.timedelta(hours=2)


def test_daily_0230_fires_once_on_the_day_0230_repeats() -> None:
    fires = first_fires("30 2 * * *", at(2026, 10, 22), at(2026, 10, 28))
    days = [local(f).date() for f in fires]
    assert days == [dt.date(2026, 10, d) for d in range(22, 28)]
    assert len(set(fires)) == len(fires)
    repeated = fires[days.index(AUTUMN)]
    # Its first occurrence (CEST, 00:30 UTC), not the second one an hour later.
    assert repeated == at(2026, 10, 25, 2, 30, fold=0)
    assert local(repeated).utcoffset() == dt.timedelta(hours=2)
    assert at(2026, 10, 25, 2, 30, fold=1) not in fires
    assert all((local(f).hour, local(f).minute) == (2, 30) for f in fires)


def test_daily_intervals_across_both_changes_are_contiguous_days() -> None:
    d = dag("30 2 * * *", start_date="2026-03-27", end_date=None)
    spring = intervals_between(d, None, at(2026, 3, 31, 12))
    assert [local(i.start).date() for i in spring] == [dt.date(2026, 3, n) for n in (27, 28, 29, 30)]
    assert [local(i.end).date() for i in spring] == [dt.date(2026, 3, n) for n in (28, 29, 30, 31)]
    # 03-28 02:30 CET -> 03-29 03:30 CEST is 24 real hours (01:30 UTC both); the interval that
    # starts at the shifted 03:30 CEST and ends 03-30 02:30 CEST is 23 hours.
    lengths = [(i.end - i.start) / 3600 for i in spring]
    assert lengths == [24, 24, 23, 24]
    assert local(spring[2].start).isoformat() == "2026-03-29T03:30:00+02:00"
    autumn = intervals_between(d, at(2026, 10, 23, 2, 30), at(2026, 10, 27, 12))
    assert [local(i.start).date() for i in autumn] == [dt.date(2026, 10, n) for n in (24, 25, 26)]
    assert [(i.end - i.start) / 3600 for i in autumn] == [24, 25, 24]
    for intervals in (spring, autumn):
        assert all(a.end == b.start for a, b in itertools.pairwise(intervals))


# -- hourly across both changes --------------------------------------------------------------
def _hourly_intervals_on(day: dt.date) -> list:
    d = dag("0 * * * *", start_date=(day - dt.timedelta(days=1)).isoformat())
    begin = at(day.year, day.month, day.day) - 1
    return intervals_between(d, begin, at(day.year, day.month, day.day) + 86400 + 6 * 3600)


def test_hourly_has_no_duplicate_instants_across_both_changes() -> None:
    for day in (SPRING, AUTUMN):
        start = at(day.year, day.month, day.day) - 6 * 3600
        fires = first_fires("0 * * * *", start, start + 36 * 3600)
        assert len(fires) == len(set(fires)), day
        assert fires == sorted(fires)
        assert all(f % 3600 == 0 for f in fires)  # Berlin's offsets are whole hours


def test_hourly_intervals_are_contiguous_across_both_changes() -> None:
    for day in (SPRING, AUTUMN):
        intervals = _hourly_intervals_on(day)
        assert len(intervals) > 24
        for a, b in itertools.pairwise(intervals):
            assert a.end == b.start, (day, local(a.end), local(b.start))
        assert all(i.end > i.start for i in intervals)
        starts = [i.start for i in intervals]
        assert len(starts) == len(set(starts))
    # Spring: 02:00 does not exist, so 01:00 CET is followed at once by 03:00 CEST, one real hour.
    spring = {local(i.start).isoformat(): i for i in _hourly_intervals_on(SPRING)}
    gap = spring["2026-03-29T01:00:00+01:00"]
    assert local(gap.end).isoformat() == "2026-03-29T03:00:00+02:00"
    assert gap.end - gap.start == 3600


# -- catch-up, latest, next, end_date --------------------------------------------------------
def test_catchup_from_start_date_yields_every_interval_once() -> None:
    d = dag("30 2 * * *", start_date="2026-03-01")
    intervals = intervals_between(d, None, at(2026, 4, 1))
    # Fires on 03-01 .. 03-31 (31 fires): 30 complete intervals, the first starting on 03-01.
    assert len(intervals) == 30
    assert local(intervals[0].start).isoformat() == "2026-03-01T02:30:00+01:00"
    assert local(intervals[-1].end).isoformat() == "2026-03-31T02:30:00+02:00"
    assert all(a.end == b.start for a, b in itertools.pairwise(intervals))
    # An interval ending exactly now is complete; a start_date on a fire time is its first start.
    d_on = dag("0 * * * *", start_date="2026-03-01T05:00:00+01:00")
    hourly = intervals_between(d_on, None, at(2026, 3, 1, 10))
    assert [local(i.start).hour for i in hourly] == [5, 6, 7, 8, 9]
    # Resuming after the last scheduled logical date yields only the later intervals.
    resumed = intervals_between(d, intervals[9].start, at(2026, 4, 1))
    assert resumed == intervals[10:]
    # Nothing is complete before the first interval ends.
    assert intervals_between(d, None, at(2026, 3, 2, 2, 29)) == []


def test_catchup_count_over_both_dst_changes_of_the_year() -> None:
    d = dag("0 * * * *", start_date="2026-01-01")
    intervals = intervals_between(d, None, at(2027, 1, 1))
    # The year's intervals cover its 8760 real hours exactly once: no gap, no overlap.
    total_hours = (at(2027, 1, 1) - at(2026, 1, 1)) / 3600
    assert total_hours == 8760
    assert sum(i.end - i.start for i in intervals) == 8760 * 3600
    assert len({i.start for i in intervals}) == len(intervals)
    assert intervals[0].start == at(2026, 1, 1) and intervals[-1].end == at(2027, 1, 1)


def test_latest_interval_is_the_most_recent_complete_one() -> None:
    d = dag("30 2 * * *", start_date="2026-01-01", catchup=False)
    latest = latest_interval(d, at(2026, 3, 29, 12))
    assert latest is not None
    assert local(latest.start).isoformat() == "2026-03-28T02:30:00+01:00"
    assert local(latest.end).isoformat() == "2026-03-29T03:30:00+02:00"
    # Just before the end of the gap-day interval, the previous interval is the latest.
    before = latest_interval(d, at(2026, 3, 29, 3, 29))
    assert before is not None and local(before.end).isoformat() == "2026-03-28T02:30:00+01:00"
    # An interval that ends exactly now is complete.
    exact = latest_interval(d, at(2026, 3, 29, 3, 30))
    assert exact == latest
    # Autumn: the interval ending on the repeated 02:30 ends at its first occurrence.
    autumn = latest_interval(d, at(2026, 10, 25, 2, 45, fold=1))
    assert autumn is not None
    assert autumn.end == at(2026, 10, 25, 2, 30, fold=0)
    assert autumn.end - autumn.start == 24 * 3600
    # It agrees with the last interval catch-up would create.
    assert intervals_between(d, None, at(2026, 3, 29, 12))[-1] == latest
    # Monthly schedules look back far enough.
    monthly = dag("@monthly", start_date="2025-01-01", catchup=False)
    m = latest_interval(monthly, at(2026, 3, 15))
    assert m is not None
    assert (local(m.start).isoformat(), local(m.end).isoformat()) == (
        "2026-02-01T00:00:00+01:00", "2026-03-01T00:00:00+01:00")
    # Nothing before the start_date, and nothing without a schedule.
    assert latest_interval(dag("30 2 * * *", start_date="2026-03-29"), at(2026, 3, 29, 12)) is None


def test_next_interval_end() -> None:
    d = dag("30 2 * * *", start_date="2026-03-27")
    # Never scheduled: the first run is due when the first interval (from start_date) ends.
    assert local(next_interval_end(d, None, at(2026, 3, 27))).isoformat() \
        == "2026-03-28T02:30:00+01:00"
    # After the run for 03-28: the next interval starts at the gap-shifted 03:30 and ends 03-30.
    assert local(next_interval_end(d, at(2026, 3, 28, 2, 30), at(2026, 3, 29, 4))).isoformat() \
        == "2026-03-30T02:30:00+02:00"
    # After the run for 03-27: due at the end of the gap, 03:30 CEST.
    assert local(next_interval_end(d, at(2026, 3, 27, 2, 30), at(2026, 3, 28, 3))).isoformat() \
        == "2026-03-29T03:30:00+02:00"
    # Autumn: after the run for 10-23, due at the first occurrence of the repeated 02:30.
    assert next_interval_end(d, at(2026, 10, 23, 2, 30), at(2026, 10, 24, 12)) \
        == at(2026, 10, 25, 2, 30, fold=0)
    manual = DagSpec(dag_id="m", fileloc="/m.yaml", tasks={}, schedule=None)
    assert next_interval_end(manual, None, at(2026, 3, 27)) is None
    # Past the end_date nothing is due.
    ended = dag("30 2 * * *", start_date="2026-03-01", end_date="2026-03-10")
    assert next_interval_end(ended, at(2026, 3, 10, 2, 30), at(2026, 3, 12)) is None


def test_end_date_is_respected() -> None:
    # end_date at midnight: the interval starting 03-28 02:30 is after it, so the last is 03-27.
    d = dag("30 2 * * *", start_date="2026-03-26", end_date="2026-03-28")
    intervals = intervals_between(d, None, at(2026, 4, 10))
    assert [local(i.start).date() for i in intervals] == [dt.date(2026, 3, 26), dt.date(2026, 3, 27)]
    # An end_date on a fire time includes the interval that starts then.
    d2 = dag("30 2 * * *", start_date="2026-03-26", end_date="2026-03-28T02:30:00+01:00")
    assert [local(i.start).date() for i in intervals_between(d2, None, at(2026, 4, 10))] == [
        dt.date(2026, 3, 26), dt.date(2026, 3, 27), dt.date(2026, 3, 28)]
    # Resuming after the last one creates nothing more, and latest_interval is None past it.
    assert intervals_between(d, intervals[-1].start, at(2026, 4, 10)) == []
    assert latest_interval(d, at(2026, 4, 10)) is None


def test_fire_times_local_notes_flag_skipped_and_repeated_wall_times() -> None:
    spring = fire_times_local("30 2 * * *", "Europe/Berlin", at(2026, 3, 27, 12), 3)
    assert [local(t).isoformat() for t, _ in spring] == [
        "2026-03-28T02:30:00+01:00", "2026-03-29T03:30:00+02:00", "2026-03-30T02:30:00+02:00"]
    notes = [n for _, n in spring]
    assert notes[0] == "" and notes[2] == ""
    assert "skips" in notes[1]
    autumn = fire_times_local("30 2 * * *", "Europe/Berlin", at(2026, 10, 23, 12), 3)
    assert [t for t, _ in autumn][1] == at(2026, 10, 25, 2, 30, fold=0)
    assert [bool(n) for _, n in autumn] == [False, True, False]
    assert "repeats" in autumn[1][1]
    # Hourly: exactly one flagged wall time on each change day, and no instant twice.
    hourly_spring = fire_times_local("0 * * * *", "Europe/Berlin", at(2026, 3, 29), 6)
    flagged = [local(t).isoformat() for t, n in hourly_spring if n]
    assert flagged == ["2026-03-29T03:00:00+02:00"]
    hourly_autumn = fire_times_local("0 * * * *", "Europe/Berlin", at(2026, 10, 25), 6)
    assert [local(t).isoformat() for t, n in hourly_autumn if n] == ["2026-10-25T02:00:00+02:00"]
    assert len({t for t, _ in hourly_autumn}) == 6
    # UTC has no DST: nothing is flagged.
    assert not any(n for _, n in fire_times_local("30 2 * * *", "UTC", at(2026, 3, 27), 5))


# -- flowtui dags show -----------------------------------------------------------------------
def _last_sunday(year: int, month: int) -> dt.date:
    day = dt.date(year, month + 1, 1) - dt.timedelta(days=1)
    return day - dt.timedelta(days=(day.weekday() + 1) % 7)


def _fire_lines(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    head = lines.index("next fire times:")
    return [l.strip() for l in lines[head + 1:] if l.strip()]


def test_dags_show_prints_next_fire_times_local_and_utc_flagging_dst(
        home: Path, pipelines: Path) -> None:
    # Years ahead of the clock, so the next 5 fire times are those after the start_date.
    year = dt.date.today().year + 2
    spring, autumn = _last_sunday(year, 3), _last_sunday(year, 10)
    for name, day, wall, utc, word in (
            ("spring", spring, "03:30:00+02:00", "01:30 UTC", "skips"),
            ("autumn", autumn, "02:30:00+02:00", "00:30 UTC", "repeats")):
        write(pipelines, f"{name}.yaml", f"""
            dag_id: {name}
            schedule: "30 2 * * *"
            timezone: Europe/Berlin
            start_date: {(day - dt.timedelta(days=2)).isoformat()}
            tasks:
              t: {{command: "true"}}
        """)
        result = flowtui("dags", "show", name, home=home, pipelines=pipelines)
        assert result.returncode == 0, result.stderr
        assert "Europe/Berlin" in result.stdout
        fires = _fire_lines(result.stdout)
        assert len(fires) == 5, result.stdout
        flagged = [l for l in fires if "DST" in l]
        assert len(flagged) == 1, fires
        line = flagged[0]
        assert line.startswith(f"{day.isoformat()}T{wall}"), line
        assert f"({day.isoformat()} {utc})" in line and word in line
        # Every line carries the wall time with its offset and the same instant in UTC.
        for l in fires:
            m = re.match(r"(\S+)  \((\d{4}-\d\d-\d\d \d\d:\d\d) UTC\)", l)
            assert m, l
            wall_time = dt.datetime.fromisoformat(m.group(1))
            assert wall_time.tzinfo is not None
            assert wall_time.astimezone(UTC).strftime("%Y-%m-%d %H:%M") == m.group(2)
        days = [dt.datetime.fromisoformat(l.split()[0]).date() for l in fires]
        assert len(set(days)) == 5 and days == sorted(days)


def test_dags_show_lists_when_runs_are_created(home: Path, pipelines: Path) -> None:
    """`dags show` lists the times a scheduled run is created (each interval's end), so its
    first line for a DAG that has not started yet is when the daemon makes the first run."""
    year = dt.date.today().year + 2
    write(pipelines, "future.yaml", f"""
        dag_id: future
        schedule: "30 2 * * *"
        timezone: Europe/Berlin
        start_date: {year}-06-01
        tasks:
          t: {{command: "true"}}
    """)
    result = flowtui("dags", "show", "future", home=home, pipelines=pipelines)
    assert result.returncode == 0, result.stderr
    first = dt.datetime.fromisoformat(_fire_lines(result.stdout)[0].split()[0])
    spec = dag("30 2 * * *", start_date=f"{year}-06-01", catchup=False)
    due = next_interval_end(spec, None, time.time())
    assert due is not None
    # The first run is for the interval [06-01 02:30, 06-02 02:30), created at its end.
    assert local(due).isoformat() == f"{year}-06-02T02:30:00+02:00"
    assert first.timestamp() == due, (first.isoformat(), local(due).isoformat())
