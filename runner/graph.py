"""Text renderings of a DAG: its layers with dependencies, and its next fire times."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from flowtui.runner.loader import PRESETS
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
    """The next ``count`` times a scheduled run is created (interval ends), local and UTC."""
    from croniter import croniter

    if not dag.schedule:
        return []
    tz = ZoneInfo(dag.timezone)
    expr = PRESETS.get(dag.schedule, dag.schedule)
    start = dt.datetime.fromtimestamp(max(now, dag.start_date or now), tz)
    itr = croniter(expr, start)
    out = []
    for _ in range(count):
        fire = itr.get_next(dt.datetime)
        utc = fire.astimezone(dt.timezone.utc)
        out.append(f"{fire.isoformat()}  ({utc.strftime('%Y-%m-%d %H:%M')} UTC)")
    return out
