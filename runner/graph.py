"""Text renderings of a DAG: its layers with dependencies, and its next fire times."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from flowtui.runner.model import DagSpec


def draw_layers(dag: DagSpec) -> str:
    """One line per layer (roots first); each task shows the tasks it waits for."""
    layer = dag.layers()
    depth = max(layer.values(), default=0)
    lines = []
    for n in range(depth + 1):
        names = [t for t in dag.topological_order() if layer[t] == n]
        parts = []
        for task_id in names:
            deps = dag.tasks[task_id].deps
            rule = dag.tasks[task_id].trigger_rule
            tag = f" [{rule}]" if rule != "all_success" else ""
            parts.append(f"{task_id}{tag}" + (f" <- {', '.join(deps)}" if deps else ""))
        lines.append(f"  {n + 1:>2}. " + "\n      ".join(parts))
    return "\n".join(lines)


def next_fire_times(dag: DagSpec, now: float, count: int) -> list[str]:
    """The next ``count`` times a scheduled run is created, in the DAG's timezone and UTC,
    with a note on wall times that DST skips or repeats."""
    from flowtui.runner.schedule import fire_times, fire_times_local

    if not dag.schedule:
        return []
    tz = ZoneInfo(dag.timezone)
    out = []
    after = now
    if dag.start_date is not None and dag.start_date > now:
        # The first run is created when the first interval (from start_date) ends.
        after = next(fire_times(dag.schedule, dag.timezone, dag.start_date - 1e-6))
    for instant, note in fire_times_local(dag.schedule, dag.timezone, after, count):
        local = dt.datetime.fromtimestamp(instant, tz)
        utc = dt.datetime.fromtimestamp(instant, dt.timezone.utc)
        line = f"{local.isoformat()}  ({utc.strftime('%Y-%m-%d %H:%M')} UTC)"
        out.append(line + (f"  ! {note}" if note else ""))
    return out
