"""Task actions shared by every screen that shows tasks: clear, retry, mark, kill, logs."""
from __future__ import annotations

import re
from dataclasses import dataclass

from typing import Any

from textual import work
from textual.binding import Binding
from textual.message import Message

from flowtui.app.backfill_dialog import BackfillDialog, preview_backfill, start_backfill
from flowtui.app.data import READ_ERRORS
from flowtui.app.dialogs import ClearDialog, ConfirmDialog, MarkDialog, Planner
from flowtui.app.render import short_run
from flowtui.runner.actions import ActionError, Outcome


@dataclass(frozen=True, slots=True)
class TaskRef:
    dag_id: str
    run_pk: int
    run_id: str
    task_id: str


TASK_BINDINGS = [
    Binding("enter", "open", "Open", id="open"),
    Binding("l", "logs", "Logs", id="logs"),
    Binding("c", "clear", "Clear", id="clear"),
    Binding("r", "retry", "Retry", id="retry"),
    Binding("m", "mark", "Mark", id="mark"),
    Binding("ctrl+k", "kill", "Kill", show=False, id="kill"),
    Binding("space", "select", "Select", show=False, id="select"),
]


class TaskActions:
    """Mixin for a screen; it provides ``current_task()`` and keeps ``selected``."""

    class TaskOpened(Message):
        """The operator opened a task's detail (the app shows it)."""

        def __init__(self, task: TaskRef) -> None:
            super().__init__()
            self.task = task

    class LogsOpened(Message):
        """The operator opened a task's log (the app shows it)."""

        def __init__(self, task: TaskRef) -> None:
            super().__init__()
            self.task = task

    selected: set[TaskRef]

    def current_task(self) -> TaskRef | None:
        raise NotImplementedError

    def targets(self) -> list[TaskRef]:
        """The selected tasks of the current run, or the task under the cursor."""
        current = self.current_task()
        chosen = [t for t in getattr(self, "selected", set())
                  if current is None or t.run_pk == current.run_pk]
        return sorted(chosen, key=lambda t: t.task_id) or ([current] if current else [])

    def action_select(self) -> None:
        current = self.current_task()
        if current is None:
            return
        if current in self.selected:
            self.selected.discard(current)
        else:
            self.selected.add(current)
        count = len(self.selected)
        self.notify(f"{count} task(s) selected: c, r, m and ctrl+k act on all of them"
                    if count else "nothing selected: keys act on the task under the cursor",
                    timeout=2, markup=False)
        self.refresh_selection()

    def refresh_selection(self) -> None:
        """Screens repaint selection marks here."""

    def action_open(self) -> None:
        current = self.current_task()
        if current is not None:
            self.post_message(TaskActions.TaskOpened(current))

    def action_logs(self) -> None:
        current = self.current_task()
        if current is not None:
            self.post_message(TaskActions.LogsOpened(current))

    def action_clear(self) -> None:
        self._planned("clear", ClearDialog)

    def action_mark(self) -> None:
        self._planned("mark", MarkDialog)

    def _planned(self, action: str, dialog: Any) -> None:
        """A dialog that shows the tasks the action changes as its options are toggled."""
        targets = self.targets()
        if not targets:
            return
        first = targets[0]
        app = self.app
        task_ids = [t.task_id for t in targets]

        def load() -> Planner:  # in the dialog's worker thread, on its own read connection
            with app.reading() as data:
                tis = data.task_instances(first.run_pk)
            return app.ops.planner(first.dag_id, task_ids, tis)

        def done(options: dict | None) -> None:
            if options is not None:
                self._submit(first, action, task_ids, options)

        self.app.push_screen(dialog(f"{first.dag_id} {first.run_id}", load), done)

    def action_retry(self) -> None:
        self._confirm_simple("retry", "Retry now", "start again now, instead of waiting for "
                                                   "its retry delay")

    def action_kill(self) -> None:
        self._confirm_simple("kill", "Kill", "stop its whole process tree (then it fails or "
                                             "retries per its policy)")

    def _confirm_simple(self, action: str, label: str, what: str) -> None:
        targets = self.targets()
        if not targets:
            return
        first = targets[0]
        lines = [f"{first.dag_id} {first.run_id}:"] + [f"  {t.task_id}: {what}" for t in targets]

        def done(ok: bool | None) -> None:
            if ok:
                for target in targets:
                    self._submit(target, action, [target.task_id], {})

        self.app.push_screen(ConfirmDialog(f"{label} {len(targets)} task(s)?", lines, label),
                             done)

    @work(thread=True, group="act", exit_on_error=False)
    def _submit(self, ref: TaskRef, action: str, task_ids: list[str], options: dict) -> None:
        try:
            outcome = self.app.ops.submit(ref.dag_id, ref.run_pk, action, task_ids, options)
        except Exception as exc:  # shown, never a traceback
            self.app.call_from_thread(self.notify, f"{VERBS.get(action, action)} of "
                                      f"{ref.dag_id}.{', '.join(task_ids)} not done: {exc}",
                                      severity="error", timeout=8, markup=False)
            return
        message, severity = told(outcome, options)
        self.app.call_from_thread(self.notify, message, severity=severity, timeout=6,
                                  markup=False)
        self.selected = set()
        self.app.call_from_thread(self.reload)


VERBS = {"clear": "Clear", "retry": "Retry now", "mark": "Mark", "kill": "Kill"}


def told(outcome: Outcome, options: dict) -> tuple[str, str]:
    """A toast a person can act on: what was sent to which task, and what became of it."""
    names = ", ".join(outcome.task_ids)
    tasks = (f"{outcome.run.dag_id}.{names}" if len(outcome.task_ids) == 1 else
             f"{len(outcome.task_ids)} tasks of {outcome.run.dag_id} ({names})")
    verb = VERBS.get(outcome.action, outcome.action)
    if outcome.action == "mark":
        verb = f"Mark {options.get('state', '')}"
    head = f"{verb} sent to {tasks} (run {short_run(outcome.run.run_id)})"
    detail = outcome.detail or ""
    notes = re.findall(r"\S+ is already \w+; nothing changed", detail)
    if outcome.applied_by == "store":
        tail = ("no runner is alive: flowtui ended its processes and recorded it"
                if outcome.action == "kill" else
                "recorded; no runner is alive, the next one started carries on")
    elif detail.startswith("queued"):
        return f"{head}; queued: no runner confirmed it yet", "warning"
    elif detail.endswith("nothing to do") and not notes:
        return f"{head}; the runner found nothing to do (its state had already moved on)", \
            "warning"
    else:
        tail = {"kill": "the runner is stopping its processes",
                "retry": "the runner starts it now"}.get(outcome.action, "the runner applied it")
    if notes and len(notes) == len(outcome.task_ids):
        return f"{head}: {'; '.join(notes)}", "information"
    return "; ".join([f"{head}; {tail}", *notes]), "information"


class PauseWorkedOut(Message):
    """What pausing or unpausing a DAG would do was worked out (an unpause: its catch-up
    runs); the screen asks with it."""

    bubble = False

    def __init__(self, dag_id: str, paused: bool, lines: list[str]) -> None:
        super().__init__()
        self.dag_id, self.paused, self.lines = dag_id, paused, lines


class DagActions:
    """Mixin for screens showing a DAG: trigger, backfill, pause. Needs ``_dag_id()``."""

    def _dag_id(self) -> str | None:
        raise NotImplementedError

    def _paused(self, dag_id: str) -> bool:
        return False

    def action_trigger(self) -> None:
        from flowtui.app.dialogs import TriggerDialog

        dag_id = self._dag_id()
        if not dag_id:
            return
        try:
            params = self.app.ops.dag(dag_id).params
        except (ActionError, OSError) as exc:
            self.notify(f"Cannot trigger {dag_id}: {exc}", severity="error", markup=False)
            return

        def trigger(values: dict) -> str:
            run_id = self.app.ops.trigger(dag_id, values["date"], values["conf"])
            return f"Triggered {dag_id}: run {run_id} queued; {self._runner_word()}"

        def done(values: dict | None) -> None:
            if values is not None:
                self._do(lambda: trigger(values), f"trigger {dag_id}")

        self.app.push_screen(TriggerDialog(dag_id, params), done)

    def _runner_word(self) -> str:
        """Said after queueing work (runs in a worker thread: it reads the store)."""
        with self.app.reading() as data:
            health = data.runner_health(self.app.clock.now())
        return ("the runner starts it" if health.alive else
                "no runner is alive: start 'flowtui runner' to execute it")

    def action_backfill(self) -> None:
        dag_id = self._dag_id()
        if not dag_id:
            return
        config = self.app.config
        try:
            dag = self.app.ops.dag(dag_id)
        except (ActionError, OSError) as exc:
            self.notify(f"Cannot backfill {dag_id}: {exc}", severity="error", markup=False)
            return

        def done(values: dict | None) -> None:
            if values is not None:
                self._do(lambda: start_backfill(config, dag, values), f"backfill {dag_id}")

        self.app.push_screen(BackfillDialog(dag_id, lambda v: preview_backfill(config, dag, v)),
                             done)

    def action_pause(self) -> None:
        dag_id = self._dag_id()
        if dag_id:
            self._ask_pause(dag_id, self._paused(dag_id))

    @work(thread=True, group="act", exit_on_error=False)
    def _ask_pause(self, dag_id: str, paused: bool) -> None:
        """Work out what the change would do (an unpause lists its catch-up runs), then ask."""
        try:
            lines = ["  no new scheduled runs are created or started; running ones finish"]
            if paused:
                with self.app.reading() as data:
                    lines = catch_up_lines(self.app.ops.dag(dag_id), data.store,
                                           now=self.app.clock.now())
        except (ActionError, OSError, *READ_ERRORS) as exc:
            self.app.call_from_thread(self.notify, f"Cannot {'unpause' if paused else 'pause'} "
                                      f"{dag_id}: {exc}", severity="error", markup=False)
            return
        self.post_message(PauseWorkedOut(dag_id, paused, lines))

    def on_pause_worked_out(self, message: PauseWorkedOut) -> None:
        """Ask, with what the change would do."""
        dag_id, paused, lines = message.dag_id, message.paused, message.lines
        verb = "Unpause" if paused else "Pause"

        def change() -> str:
            self.app.ops.set_paused(dag_id, not paused)
            return (f"{dag_id} unpaused: {lines[0].strip().rstrip(':')}" if paused else
                    f"{dag_id} paused: no new scheduled runs start until it is unpaused")

        def done(ok: bool | None) -> None:
            if ok:
                self._do(change, f"{verb.lower()} {dag_id}")

        self.app.push_screen(ConfirmDialog(f"{verb} {dag_id}?", lines, verb), done)

    @work(thread=True, group="act", exit_on_error=False)
    def _do(self, call: Any, what: str) -> None:
        try:
            message, severity = call(), "information"
        except Exception as exc:  # said in one line, never a traceback
            message, severity = f"Could not {what}: {exc}", "error"
        self.app.call_from_thread(self.notify, message, severity=severity, timeout=8,
                                  markup=False)
        self.app.call_from_thread(self.reload)


def catch_up_lines(dag: Any, store: Any, shown: int = 12, *,
                   now: float | None = None) -> list[str]:
    """The runs an unpause creates at once (due by ``now``, by default the store's clock), as
    ``flowtui dags unpause --dry-run`` lists them."""
    from flowtui.runner.clock import iso
    from flowtui.runner.daemon import due_intervals, last_scheduled

    if not dag.schedule:
        return ["  it has no schedule: no run is created; manual triggers start again"]
    due = due_intervals(dag, last_scheduled(store, dag.dag_id),
                        store.now() if now is None else now)
    if not due:
        return ["  no catch-up run is due; its schedule resumes at the next interval"]
    mode = "catchup on: every missed interval" if dag.catchup else "catchup off: the latest only"
    lines = [f"  it creates {len(due)} scheduled run(s) now ({mode}):"]
    lines += [f"    logical date {(iso(i.start, dag.timezone) or '')[:16].replace('T', ' ')}"
              for i in due[:shown]]
    if len(due) > shown:
        lines.append(f"    ... and {len(due) - shown} more")
    return lines
