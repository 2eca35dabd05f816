"""What ``flowtui run`` shows: a live table on a terminal (lines otherwise), then its failures."""
from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any, Callable

from flowtui.runner.clock import SYSTEM, local_hms
from flowtui.runner.config import Config
from flowtui.runner.durations import format_duration
from flowtui.runner.graph import shorten
from flowtui.runner.model import DagSpec
from flowtui.runner.text import COLOURS, GLYPHS, visible
from flowtui.store.models import Run, TaskInstance


class _Plain:
    def __init__(self, out: Any, now: Callable[[], float]) -> None:
        self.out = out
        self.now = now

    def update(self, task_id: str | None, state: str, detail: str, try_number: int) -> None:
        stamp = local_hms(self.now())
        if task_id is None:
            return
        extra = f" (try {try_number})" if state == "running" and try_number > 1 else ""
        tail = f": {visible(detail)}" if detail and state not in ("running", "progress") else ""
        if state == "progress":
            return
        self.out.write(f"{stamp}  {GLYPHS.get(state, ' ')} {task_id} {state}{extra}{tail}\n")
        self.out.flush()

    def close(self) -> None:
        pass


class _Live:
    """A rich Live table of every task, refreshed a few times a second."""

    def __init__(self, dag: DagSpec, now: Callable[[], float]) -> None:
        from rich.console import Console
        from rich.live import Live

        self.dag = dag
        self.now = now
        self.rows: dict[str, dict[str, Any]] = {
            t: {"state": "none", "try": 0, "started": None, "ended": None, "detail": ""}
            for t in dag.topological_order()}
        self.console = Console()
        self.live = Live(get_renderable=self._render, console=self.console,
                         refresh_per_second=8, transient=False)
        self.live.start()

    def update(self, task_id: str | None, state: str, detail: str, try_number: int) -> None:
        if task_id is None:
            return
        row = self.rows[task_id]
        if state == "progress":
            row["detail"] = detail
            return
        if state == "running":
            row["started"], row["ended"] = self.now(), None
        elif state in ("success", "failed", "skipped", "upstream_failed", "up_for_retry"):
            row["ended"] = self.now()
        row["state"], row["try"], row["detail"] = state, try_number, detail

    def _render(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        name_width = max(len(t) for t in self.rows) + 2
        total = self.console.width
        lines = [Text(f"{'task':<{name_width}} {'state':<15} {'try':>3} {'time':>8}  reason",
                      style="bold")]
        done = 0
        for task_id, row in self.rows.items():
            state = row["state"]
            if state in ("success", "failed", "skipped", "upstream_failed"):
                done += 1
            started = row["started"]
            took = ("" if started is None
                    else format_duration((row["ended"] or self.now()) - started))
            style = COLOURS.get(state, "")
            line = Text(f"{GLYPHS.get(state, ' ')} {task_id:<{name_width - 2}} ", style=style)
            line.append(f"{state:<15} {row['try'] or '':>3} {took:>8}  ", style=style)
            line.append(visible(row["detail"] or ""), style="dim")
            line.truncate(total - 1, overflow="ellipsis")
            lines.append(line)
        lines.append(Text(f"{done}/{len(self.rows)} tasks done", style="bold"))
        return Group(*lines)

    def close(self) -> None:
        self.live.stop()


def make_listener(dag: DagSpec, live: bool, out: Any = None,
                  now: Callable[[], float] = SYSTEM.now) -> tuple[Callable[..., None], Any]:
    """A listener for the engine and the display it drives (``out``: where plain lines go;
    ``now``: the clock the live table's durations are read from)."""
    display: Any = (_Live(dag, now) if live and len(dag.tasks) <= 200
                    else _Plain(out or sys.stdout, now))

    def listener(run: Any, task: Any, what: str, detail: str) -> None:
        if task is None:
            return
        if what == "progress":
            watch = task.watch
            if watch is not None and watch.progress is not None:
                display.update(task.task_id, "progress", f"{watch.progress:.0f}%", task.try_number)
            return
        display.update(task.task_id, what, detail or task.reason, task.try_number)

    return listener, display


# -- the summary after a run -----------------------------------------------------------------
def failure_lines(args: argparse.Namespace, config: Config, dag: DagSpec, run: Run,
              tis: list[TaskInstance], errors: dict[str, str]) -> list[str]:
    """Each failed task with its reason and error excerpt and the command that prints its log;
    each task that never ran because of it, once, under it."""
    by_id = {ti.task_id: ti for ti in tis}
    blocked: dict[str, list[str]] = {}
    orphans = []
    for ti in tis:
        if ti.state == "upstream_failed":
            cause = failed_upstreams(dag, by_id, ti.task_id)
            if cause:
                blocked.setdefault(cause[0], []).append(ti.task_id)
            else:
                orphans.append(ti)
    lines = []
    for ti in tis:
        if ti.state != "failed":
            continue
        excerpt = errors.get(ti.task_id)
        lines.append(f"  {GLYPHS['failed']} {visible(ti.task_id, inline=True)}: "
                     f"{visible(ti.reason or 'failed', inline=True)}"
                     + (f": {visible(shorten(excerpt, 400), inline=True)}" if excerpt else ""))
        if ti.try_number > 0:  # a task that failed before it started has no log
            lines.append(f"      logs: {logs_command(args, config, run, ti.task_id)}")
        if blocked.get(ti.task_id):
            names = ", ".join(blocked[ti.task_id])
            lines.append(f"      {GLYPHS['upstream_failed']} never ran because of it: "
                         f"{visible(names, inline=True)}")
    for ti in orphans:
        lines.append(f"  {GLYPHS[ti.state]} {visible(ti.task_id, inline=True)}: {ti.state}: "
                     f"{visible(ti.reason or '', inline=True)}")
    return lines


def logs_command(args: argparse.Namespace, config: Config, run: Run, task_id: str) -> str:
    """The exact ``flowtui logs`` command line for a task of a run, ready to paste (with the
    --home and --pipelines this command was given, and only those)."""
    words = ["flowtui"]
    if getattr(args, "home", None) is not None:
        words += ["--home", str(config.home)]
    if getattr(args, "pipelines", None) is not None:
        words += ["--pipelines", str(config.pipelines)]
    words += ["logs", run.dag_id, run.run_id, task_id]
    return visible(" ".join(shlex.quote(word) for word in words), inline=True)


def failed_upstreams(dag: DagSpec | None, tis: dict[str, TaskInstance], task_id: str) -> list[str]:
    """The failed tasks that left ``task_id`` upstream_failed, in topological order: its failed
    ancestors when the DAG is known, else every failed task of the run."""
    from flowtui.runner.actions import ancestors

    if dag is not None and task_id in dag.tasks:
        above = ancestors(dag, [task_id])
        return [t for t in dag.topological_order()
                if t in above and tis.get(t) is not None and tis[t].state == "failed"]
    return [t for t, ti in tis.items() if ti.state == "failed"]
