"""Task detail: why it is not running, its error line, the rendered command, tries, log tail."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from rich.markup import escape
from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from flowtui.app.acting import TASK_BINDINGS, TaskActions, TaskRef
from flowtui.app.base import NAV, FlowScreen
from flowtui.app.lists import sync_table
from flowtui.app.render import ago, clock, display_path, state_colour, state_text
from flowtui.runner.actions import ActionError
from flowtui.runner.text import visible
from flowtui.runner.durations import format_duration
from flowtui.runner.excerpt import Excerpt, find_excerpt, tail
from flowtui.store.models import TaskInstance, Try

TAIL_LINES = 10
COMMAND_LINES = 3  # screen lines of the command at most, so the head fits at 80x24
KINDS = {"exception": "exception", "level": "error-level line", "failure": "failure line"}
RUNNING_RELOAD = 2.0  # seconds between re-reads while the task runs (its log grows silently)


@dataclass(slots=True)
class LogFacts:
    """What the latest try's log says; kept while the file's size and mtime do not change."""

    stamp: tuple[int, int] | None  # (size, mtime_ns); None when the file is not there
    excerpt: Excerpt | None = None
    tail: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Detail:
    ti: TaskInstance | None
    tries: list[Try]
    command: list[tuple[str, str]]  # (label, text as the task saw it)
    log: LogFacts | None
    host: str | None = None  # where the newest try ran, when that is another host (SPEC 10)


def rendered_command(dag: Any, run: Any, task_id: str, try_number: int) -> list[tuple[str, str]]:
    """What the task ran: its command (or sensor, or Python function) and working folder, with
    every ``{{ name }}`` filled from the run as the runner fills it for that try."""
    from flowtui.runner.engine import run_context
    from flowtui.runner.templating import render

    spec = dag.tasks.get(task_id)
    if spec is None:
        return [("command", f"(the task is no longer in {display_path(dag.fileloc)})")]
    context = dict(run_context(dag, run))  # a stored Run carries the fields a live one does
    context["task_id"] = task_id
    context["try_number"] = str(max(1, try_number))

    def filled(text: Any) -> str:
        text = text if isinstance(text, str) else json.dumps(text)
        try:
            return render(text, context)
        except (KeyError, TypeError):  # a param the run no longer has: show the template
            return text

    out: list[tuple[str, str]] = []
    if spec.sensor:
        kind, arg = next(iter(spec.sensor.items()))
        out.append(("sensor", f"{kind}: {filled(arg)}"))
    elif spec.python_callable:
        out.append(("python", f"{spec.python_callable}() from {display_path(dag.fileloc)}"))
    else:
        out.append(("command", filled(spec.command or "")))
    if spec.cwd:
        out.append(("cwd", filled(spec.cwd)))
    return out


def read_log(path: str, known: LogFacts | None) -> LogFacts:
    """The excerpt and tail of a log, read again only when the file changed."""
    try:
        st = os.stat(path)
    except OSError:
        return LogFacts(None)
    stamp = (st.st_size, st.st_mtime_ns)
    if known is not None and known.stamp == stamp:
        return known
    return LogFacts(stamp, find_excerpt(path), tail(path, TAIL_LINES))


def stamp_tz(ts: float) -> str:
    """An absolute time with its timezone, as detail views show times."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ts))


def zone_name() -> str:
    """The local timezone's name now (daylight saving or not)."""
    return time.strftime("%Z", time.localtime())


def clipped(console: Any, label: str, value: str, width: int, most: int = COMMAND_LINES,
            more: str = " … (the rest is in the DAG file)") -> Text:
    """``label: value`` wrapped at ``width`` to ``most`` lines, saying so when there is more."""
    whole = Text.assemble((f"{label}: ", "bold"), value)
    lines = whole.wrap(console, max(20, width))
    if len(lines) <= most:
        return whole
    kept = lines[:most]
    kept[-1].truncate(max(1, width - len(more)))
    kept[-1].append(more, style="dim")
    return Text("\n").join(kept)


def one_line(text: str) -> str:
    return visible(text.expandtabs(4), inline=True)


class LogTail(Static):
    """The last lines of a log, bottom-aligned: when fewer fit, the newest ones are shown."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("", **kwargs)
        self.lines: list[Text] = []

    def set_lines(self, lines: list[Text]) -> None:
        self.lines = lines
        self.refresh()

    def render(self) -> Text:
        room = self.size.height or len(self.lines)
        shown = Text("\n").join(self.lines[-room:] if room else [])
        shown.no_wrap, shown.overflow = True, "ellipsis"
        return shown


class TaskScreen(TaskActions, FlowScreen):
    BINDINGS = [*NAV, *[b for b in TASK_BINDINGS if b.action not in ("open", "select")]]

    def __init__(self, ref: TaskRef) -> None:
        super().__init__()
        self.ref = ref
        self.selected: set[TaskRef] = set()
        self.TITLE = escape(visible(f"{ref.dag_id} / {ref.run_id} / {ref.task_id}", inline=True))
        self.detail: Detail | None = None
        self._log_facts: LogFacts | None = None
        self._log_path = ""
        self._fetched = 0.0

    def body(self) -> ComposeResult:
        yield Static("", id="task-head")
        table = DataTable(cursor_type="row", id="table")
        zone = zone_name()
        for name in ("try", "state", "exit", "took", "reason", f"started ({zone})", "pid", "cpu",
                     "memory"):
            table.add_column(name, key=name.split(" ")[0])
        yield table
        yield Static("log tail", id="tail-title")
        yield LogTail(id="tail")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#table", DataTable).focus()
        self.set_interval(1.0, self._tick)

    # -- data (worker thread) --------------------------------------------------------------
    def fetch(self, data: Any) -> Detail:
        tis = {t.task_id: t for t in data.task_instances(self.ref.run_pk)}
        ti = tis.get(self.ref.task_id)
        tries = data.tries(self.ref.run_pk, self.ref.task_id)
        last = tries[-1] if tries else None
        log = None
        if last is not None:
            known = self._log_facts if self._log_path == last.log_path else None
            log = read_log(last.log_path, known)
            self._log_facts, self._log_path = log, last.log_path
        host = data.runner_host(last.runner_id) if last and last.runner_id else None
        return Detail(ti, tries, self._command(data, ti), log,
                      host if data.several_hosts() else None)

    def _command(self, data: Any, ti: TaskInstance | None) -> list[tuple[str, str]]:
        run = data.run(self.ref.run_pk)
        if run is None:
            return []
        try:
            dag = self.app.ops.dag(self.ref.dag_id)
        except (ActionError, OSError) as error:  # the DAG file does not load now: say so
            return [("command", f"(not shown: {error})")]
        return rendered_command(dag, run, self.ref.task_id, ti.try_number if ti else 1)

    # -- paint (main thread) ---------------------------------------------------------------
    def show(self, result: Detail) -> None:
        self.detail = result
        self._fetched = time.monotonic()
        self._paint_head()
        if result.ti is None:
            return
        self._paint_tries(result.tries)
        self._paint_tail(result)

    def _tick(self) -> None:
        """Countdowns and ages move with the clock, not with the store."""
        if self.detail is None or self.detail.ti is None:
            return
        self._paint_head()
        if self.detail.ti.state == "running" and \
                time.monotonic() - self._fetched >= RUNNING_RELOAD:
            self._fetched = time.monotonic()
            self.reload()

    def _paint_head(self) -> None:
        assert self.detail is not None
        head = self.query_one("#task-head", Static)
        ti = self.detail.ti
        if ti is None:
            head.update("This task is not in the run any more.")
            return
        width = head.content_region.width or self.size.width - 2
        head.update(head_text(self.app, self.detail, self.app.clock.now(), width))

    def _paint_tries(self, tries: list[Try]) -> None:
        table = self.query_one("#table", DataTable)
        kept = self._cursor_try(table)
        rows = []
        for t in reversed(tries):  # newest first: the try that matters is in view
            # A try still running has no "took" yet: the table is painted when tries change,
            # so a time here would freeze; the head says how long it has been running.
            took = "-" if t.end_date is None else format_duration(t.end_date - t.start_date)
            rows.append((str(t.try_number), (
                str(t.try_number), state_text(self.app, t.state),
                "-" if t.exit_code is None else str(t.exit_code), took,
                one_line(t.reason), clock(t.start_date), str(t.pid or "-"),
                "-" if t.cpu_percent is None else f"{t.cpu_percent:.0f}%",
                "-" if t.rss_bytes is None else f"{t.rss_bytes / 1e6:.0f} MB")))
        sync_table(table, rows)
        keys = [key for key, _ in rows]
        if kept in keys and table.cursor_row != keys.index(kept):
            table.move_cursor(row=keys.index(kept))

    def _paint_tail(self, detail: Detail) -> None:
        log = self.query_one("#tail", LogTail)
        title = self.query_one("#tail-title", Static)
        last = detail.tries[-1] if detail.tries else None
        facts = detail.log
        log.set_lines([])
        if last is None or facts is None:
            title.update("log tail: the task has not started")
            return
        if facts.stamp is None:
            title.update(f"log tail of try {last.try_number}: the log file is not there")
            return
        title.update(f"log tail of try {last.try_number} (last {TAIL_LINES} lines; l opens "
                     f"the log)")
        excerpt = facts.excerpt.text if facts.excerpt else None
        colour = state_colour(self.app, "failed") or "red"
        lines = []
        for line in facts.tail:
            lines.append(Text(one_line(line)))
            if excerpt is not None and line == excerpt:
                lines[-1].stylize(f"bold {colour}")
            elif line.startswith("::flowtui "):  # the runner's protocol, not the task's words
                lines[-1].stylize("dim")
        log.set_lines(lines)

    @staticmethod
    def _cursor_try(table: DataTable) -> str | None:
        if not table.row_count:
            return None
        key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return str(key.value)

    # -- keys ------------------------------------------------------------------------------
    def current_task(self) -> TaskRef | None:
        return self.ref

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_logs()

    def action_logs(self) -> None:
        from flowtui.app.log_screen import LogScreen

        kept = self._cursor_try(self.query_one("#table", DataTable))
        self.app.push_screen(LogScreen(self.ref, None if kept is None else int(kept)))


def head_text(app: Any, detail: Detail, now: float, width: int) -> Text:
    """The head of task detail, most urgent first: state, why, countdown, the error line,
    the command, times, progress and metadata, the log's path."""
    ti = detail.ti
    assert ti is not None
    last = detail.tries[-1] if detail.tries else None
    text = Text()
    text.append_text(state_text(app, ti.state))
    text.append(f"   try {ti.try_number} of {ti.max_tries}   pool {one_line(ti.pool)}")
    if detail.host:
        text.append(f"   on {one_line(detail.host)}")
    if ti.duration is not None:
        text.append(f"   took {format_duration(ti.duration)}")
    if ti.state == "running":
        if last is not None and last.pid:
            text.append(f"\nrunning for {format_duration(now - last.start_date)}, pid "
                        f"{last.pid}, heartbeat {ago(last.heartbeat_at, now)}")
    elif ti.state == "success":
        text.append(f"\n{one_line(ti.reason or 'finished successfully')}")
    else:
        why = ti.reason or {"none": "not considered yet"}.get(ti.state, "no reason recorded")
        text.append("\nwhy not running: ", style="bold")
        text.append(one_line(why))
    if ti.state in ("up_for_retry", "up_for_reschedule") and ti.next_try_at is not None:
        word = "retry" if ti.state == "up_for_retry" else "next poke"
        wait = ti.next_try_at - now
        when = f"in {format_duration(wait)}" if wait > 0 else "due now (waiting for the runner)"
        text.append(f"\n{word} {when}", style="bold")
        text.append(f" (at {stamp_tz(ti.next_try_at)})")
    if last is not None and detail.log is not None:
        excerpt_text(app, text, last, detail.log, ti.state)
    for label, value in detail.command:
        text.append("\n")
        text.append_text(clipped(app.console, label, visible(value.expandtabs(4)).strip("\n"),
                                 width))
    if last is not None:
        text.append(f"\nstarted {stamp_tz(last.start_date)} ({ago(last.start_date, now)})")
        if last.end_date is not None:
            same_day = time.localtime(last.end_date)[:3] == time.localtime(last.start_date)[:3]
            end = time.strftime("%H:%M:%S %Z", time.localtime(last.end_date)) if same_day \
                else stamp_tz(last.end_date)
            text.append(f" · ended {end} ({ago(last.end_date, now)})")
        if last.progress is not None:
            filled = int(last.progress / 5)
            text.append(f"\nprogress [{'█' * filled}{'·' * (20 - filled)}] {last.progress:.0f}%")
        if last.metadata:
            text.append("\n")
            text.append_text(clipped(app.console, "metadata", one_line(json.dumps(last.metadata)),
                                     width, 2, " …"))
        text.append(f"\nlog {display_path(last.log_path)}", style="dim")
    return text


def excerpt_text(app: Any, text: Text, last: Try, facts: LogFacts, state: str) -> None:
    """The error excerpt of the latest try, highlighted and labelled with its kind."""
    if facts.excerpt is not None:
        colour = state_colour(app, "failed") or "red"
        kind = KINDS.get(facts.excerpt.kind, facts.excerpt.kind)
        text.append(f"\nerror ({kind}, try {last.try_number}): ", style="bold")
        text.append(one_line(facts.excerpt.text), style=f"bold {colour}")
    elif state in ("failed", "up_for_retry") and facts.stamp is not None:
        text.append(f"\nerror: no line of try {last.try_number}'s log reads as an error; "
                    "see the tail below")
