"""Freshness (SPEC 9): a dataset whose newest event is older than its policy allows raises a
``dataset_stale`` alert through the same policies and escalation as a failed task, even when
nothing failed (a producer that silently stopped being scheduled); the next event resolves it."""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from flowtui.runner.durations import format_duration
from flowtui.runner.schema import freshness

if TYPE_CHECKING:
    from flowtui.runner.alerting import Alerts
    from flowtui.runner.model import DagSpec
    from flowtui.store import Store

KIND = "dataset_stale"


def policies(dags: dict[str, DagSpec], raw: dict[str, Any]) -> tuple[
        dict[str, tuple[str, dict[str, Any], str]], list[str]]:
    """dataset -> (the DAG whose policies it pages through, its freshness, timezone), from
    each producing DAG's ``datasets:`` block and flowtui.toml's ``[datasets.NAME]`` (which
    pages through every policy listing dataset_stale); and the toml's errors, one line each."""
    found: dict[str, tuple[str, dict[str, Any], str]] = {}
    errors: list[str] = []
    table = raw.get("datasets", {})
    if not isinstance(table, dict):
        errors.append("flowtui.toml: [datasets] must be a table of [datasets.NAME] settings")
        table = {}
    for name, settings in table.items():
        try:
            if not isinstance(settings, dict) or set(settings) - {"freshness"}:
                raise ValueError(f"datasets.{name}: takes freshness = {{max_age = \"26h\"}} "
                                 "(or nothing: a feed from outside, declared)")
            if "freshness" in settings:
                found[str(name)] = ("", freshness(settings["freshness"],
                                                  f"datasets.{name}.freshness"), "UTC")
        except ValueError as exc:
            errors.append(f"flowtui.toml: {exc}")
    for dag in dags.values():
        for name, policy in dag.freshness.items():
            found[name] = (dag.dag_id, policy, dag.timezone)
    return found, errors


def verdict(watched: dict[str, tuple[str, dict[str, Any], str]], name: str,
            newest: float | None, now: float) -> str:
    """One dataset's freshness as a reader sees it: ``fresh``, ``stale: why``, ``no event
    yet`` (the runner pages once the policy's age has passed since it started) or ``no
    policy``."""
    if name not in watched:
        return "no policy"
    if newest is None:
        return "no event yet"
    _, policy, zone = watched[name]
    why, _ = judge(policy, zone, newest, newest, now)
    return f"stale: {why}" if why else "fresh"


class FreshnessWatch:
    def __init__(self, store: Store, alerts: Alerts, started: float) -> None:
        self.store = store
        self.alerts = alerts
        self.started = started  # a dataset with no event yet is judged from here
        # dataset -> the DAG its open alert was raised under; unknown until the first check
        self.stale: dict[str, str] | None = None

    def check(self, watched: dict[str, tuple[str, dict[str, Any], str]], now: float) -> float | None:
        """Raise or resolve each watched dataset's alert; return when a verdict next changes."""
        due: list[float] = []
        stale_now: dict[str, str] = {}
        for name, (dag_id, policy, timezone) in watched.items():
            newest = self.store.datasets.newest_at(name)
            verdict, when = judge(policy, timezone, newest, self.started, now)
            if when is not None:
                due.append(when)
            if verdict is None:
                continue
            stale_now[name] = dag_id
            self.alerts.raise_alert(KIND, dag_id, "", name, verdict, now)
        before = self.stale if self.stale is not None else {n: w[0] for n, w in watched.items()}
        for name, dag_id in before.items():
            if name not in stale_now:  # fresh again, or no longer watched: the alert goes
                self.alerts.resolve_matching(dag_id, "", name, now, (KIND,))
        self.stale = stale_now
        return min(due) if due else None


def judge(policy: dict[str, Any], timezone: str, newest: float | None, started: float,
          now: float) -> tuple[str | None, float | None]:
    """(why it is stale, or None; when that next changes without a new event)."""
    if "max_age" in policy:
        age = policy["max_age"]
        base = newest if newest is not None else started
        if now >= base + age:
            said = (f"newest event {format_duration(now - newest)} ago" if newest is not None
                    else "no event yet")
            return f"{said}; allowed {format_duration(age)}", None
        return None, base + age
    tz = ZoneInfo(timezone)
    local = dt.datetime.fromtimestamp(now, tz)
    hour, minute = (int(p) for p in policy["deadline"].split(":"))
    midnight = dt.datetime(local.year, local.month, local.day, tzinfo=tz)
    deadline = midnight.replace(hour=hour, minute=minute)
    if local < deadline:
        return None, deadline.timestamp()
    following = (midnight + dt.timedelta(days=1)).replace(hour=hour, minute=minute).timestamp()
    if newest is not None and newest >= midnight.timestamp():
        return None, following
    return (f"no event today by {policy['deadline']} ({timezone})", following)
