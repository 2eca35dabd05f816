"""SLAs: each run's deadline, a predicted finish along the remaining critical path, and the
at-risk / missed verdicts the runner turns into alerts."""
from __future__ import annotations

import datetime as dt
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flowtui.runner.clock import iso
from flowtui.runner.durations import parse_duration
from flowtui.runner.model import DagSpec
from flowtui.store import Store
from flowtui.store.models import Run

if TYPE_CHECKING:
    from flowtui.runner.alerting import Alerts

FINISHED = {"success", "failed", "skipped", "upstream_failed"}
# Instants every renderer can show in any timezone: datetime's years 1-9999, a day inside.
EARLIEST = dt.datetime(1, 1, 2, tzinfo=dt.timezone.utc).timestamp()
LATEST = dt.datetime(9999, 12, 30, tzinfo=dt.timezone.utc).timestamp()


class SlaError(ValueError):
    """A DAG's SLA that gives no usable deadline for a run; the message says why."""


def _in_range(ts: float) -> bool:
    return math.isfinite(ts) and EARLIEST <= ts <= LATEST


@dataclass(slots=True)
class SlaStatus:
    dag_id: str
    run_id: str
    run_state: str
    deadline: float
    predicted: float | None
    critical_path: list[str] = field(default_factory=list)
    verdict: str = "on track"  # on track | at risk | missed | met


def deadline_for(dag: DagSpec, run: Run) -> float | None:
    """``deadline: "08:00"``: that time (DAG timezone) on the day the interval ends;
    ``within: 2h``: that long after the interval ends (manual runs: after they start).

    Raises ``SlaError`` when the SLA gives no deadline a clock can show (whatever values the
    DagSpec holds: the loader's checks are not what keeps this from crashing)."""
    try:
        deadline = _deadline(dag, run)
    except (ValueError, OverflowError, OSError, TypeError, ZoneInfoNotFoundError) as exc:
        raise SlaError(f"sla {_describe(dag.sla)} gives no deadline ({exc})") from None
    if deadline is not None and not _in_range(deadline):
        fix = "; use a shorter duration" if "within" in (dag.sla or {}) else ""
        raise SlaError(f"sla {_describe(dag.sla)} puts the deadline outside the years "
                       f"1-9999{fix}")
    return deadline


def _describe(sla: dict | None) -> str:
    key, value = next(iter((sla or {"": ""}).items()))
    if isinstance(value, float):
        value = f"{value:g}s"
    return f"{{{key}: {value}}}"


def _deadline(dag: DagSpec, run: Run) -> float | None:
    sla = dag.sla or {}
    if run.run_type == "backfill":
        return None  # history re-run on purpose: its deadlines are long gone
    if "deadline" in sla:
        if run.run_type != "scheduled":
            return None  # a clock-time deadline belongs to the schedule's own runs
        tz = ZoneInfo(dag.timezone)
        hours, minutes = (int(x) for x in str(sla["deadline"]).split(":"))
        day = dt.datetime.fromtimestamp(run.data_interval_end, tz).date()
        return dt.datetime(day.year, day.month, day.day, hours, minutes, tzinfo=tz).timestamp()
    if "within" in sla:
        base = run.data_interval_end
        if run.run_type == "manual":
            base = run.start_date or run.data_interval_end
        return base + parse_duration(sla["within"])
    return None


def predict(store: Store, dag: DagSpec, run: Run, now: float) -> tuple[float, list[str]]:
    """Now plus the longest path of remaining work (elapsed time of running tasks counted)."""
    typical = store.alerts.typical_durations(dag.dag_id)
    tis = {t.task_id: t for t in store.task_instances(run.pk)}
    best: dict[str, tuple[float, list[str]]] = {}
    for task_id in dag.topological_order():
        ti = tis.get(task_id)
        state = ti.state if ti else "none"
        if state in FINISHED:
            remaining = 0.0
        elif state == "running" and ti is not None and ti.start_date is not None:
            remaining = max(0.0, typical.get(task_id, 0.0) - (now - ti.start_date))
        else:
            remaining = typical.get(task_id, 0.0)
        deps = dag.tasks[task_id].deps
        base = max((best[d] for d in deps), key=lambda b: b[0], default=(0.0, []))
        path = base[1] + ([task_id] if state not in FINISHED else [])
        best[task_id] = (base[0] + remaining, path)
    longest = max(best.values(), key=lambda b: b[0], default=(0.0, []))
    return now + longest[0], longest[1]


def status(store: Store, dag: DagSpec, run: Run, now: float) -> SlaStatus | None:
    deadline = deadline_for(dag, run)
    if deadline is None:
        return None
    if run.state == "success":
        met = (run.end_date or now) <= deadline
        return SlaStatus(dag.dag_id, run.run_id, run.state, deadline, run.end_date, [],
                         "met" if met else "missed")
    predicted, path = predict(store, dag, run, now)
    if now >= deadline:
        verdict = "missed"
    elif predicted > deadline:
        verdict = "at risk"
    else:
        verdict = "on track"
    shown = predicted if _in_range(predicted) else None  # beyond any clock: not shown
    return SlaStatus(dag.dag_id, run.run_id, run.state, deadline, shown, path, verdict)


def active_statuses(store: Store, dags: dict[str, DagSpec], now: float,
                    recent: float = 86400.0, problems: list[str] | None = None
                    ) -> list[SlaStatus]:
    """SLA status of unfinished runs and of runs that ended in the last day. A DAG whose SLA
    gives no usable deadline is left out, with one line saying why added to ``problems``."""
    out = []
    for run in store.alerts.sla_runs(now - recent):
        dag = dags.get(run.dag_id)
        if dag is None or not dag.sla:
            continue
        try:
            result = status(store, dag, run, now)
        except SlaError as exc:
            where = f"{dag.fileloc}:{dag.line}" if dag.line else dag.fileloc
            line = f"{where}: DAG {dag.dag_id!r}: {exc}; its SLA is not checked"
            if problems is not None and line not in problems:
                problems.append(line)
            continue
        if result is not None:
            out.append(result)
    return out


class SlaWatch:
    """Turns SLA verdicts into alerts: ``sla_at_risk`` when the predicted finish passes the
    deadline, ``sla_miss`` when the deadline passes with the run unfinished, each once per
    verdict a run reaches; an SLA it cannot check is said once while it lasts."""

    def __init__(self, alerts: Alerts, say: Callable[[str], None] | None = None) -> None:
        self.alerts = alerts
        self.say = say or _say
        self._seen: dict[tuple[str, str], str] = {}
        self._problems: set[str] = set()

    def check(self, dags: dict[str, DagSpec], now: float) -> None:
        if not any(d.sla for d in dags.values()):
            return
        problems: list[str] = []
        statuses = active_statuses(self.alerts.store, dags, now, problems=problems)
        for line in problems:
            if line not in self._problems:
                self.say(line)
        self._problems = set(problems)  # one that goes and comes back is said again
        current = {(i.dag_id, i.run_id) for i in statuses}
        for key in [k for k in self._seen if k not in current]:
            del self._seen[key]  # out of the SLA window: forget it
        for item in statuses:
            key = (item.dag_id, item.run_id)
            if self._seen.get(key) == item.verdict:
                continue
            self._seen[key] = item.verdict
            if item.verdict == "at risk":
                self.alerts.raise_alert(
                    "sla_at_risk", item.dag_id, item.run_id, "",
                    f"predicted to finish at {iso(item.predicted) or 'unknown'}, after the "
                    f"deadline {iso(item.deadline)} (critical path: "
                    f"{' -> '.join(item.critical_path)})", now=now)
            elif item.verdict == "missed" and item.run_state != "success":
                self.alerts.raise_alert("sla_miss", item.dag_id, item.run_id, "",
                                        f"not done by its deadline {iso(item.deadline)}",
                                        now=now)


def _say(line: str) -> None:
    print(f"flowtui runner: {line}", file=sys.stderr, flush=True)
