"""Task actions shared by every screen that shows tasks: clear, retry, mark, kill, logs."""
from __future__ import annotations

from dataclasses import dataclass

from typing import Any

from textual import work
from textual.binding import Binding

from flowtui.app.dialogs import ClearDialog, ConfirmDialog, MarkDialog


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
    Binding("r", "retry", "Retry now", id="retry"),
    Binding("m", "mark", "Mark", id="mark"),
    Binding("ctrl+k", "kill", "Kill", id="kill"),
    Binding("space", "select", "Select", id="select"),
]


class TaskActions:
    """Mixin for a screen; it provides ``current_task()`` and keeps ``selected``."""

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
        self.notify(f"{len(self.selected)} selected", timeout=1.5)
        self.refresh_selection()

    def refresh_selection(self) -> None:
        """Screens repaint selection marks here."""

    def action_open(self) -> None:
        from flowtui.app.task_screen import TaskScreen

        current = self.current_task()
        if current is not None:
            self.app.push_screen(TaskScreen(current))

    def action_logs(self) -> None:
        from flowtui.app.log_screen import LogScreen

        current = self.current_task()
        if current is not None:
            self.app.push_screen(LogScreen(current))

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
        ops = self.app.ops
        task_ids = [t.task_id for t in targets]

        def plan(options: dict) -> list[str]:
            return ops.plan(first.dag_id, first.run_pk, task_ids, options)

        def done(options: dict | None) -> None:
            if options is not None:
                self._submit(first, action, task_ids, options)

        self.app.push_screen(dialog(f"{first.dag_id} {first.run_id}", plan), done)

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
            self.app.call_from_thread(self.notify, f"{action}: {exc}", severity="error",
                                      timeout=8)
            return
        where = outcome.applied_by if outcome.applied_by != "store" else "recorded (no runner)"
        self.app.call_from_thread(self.notify, f"{action} {', '.join(outcome.task_ids)}: {where}",
                                  timeout=4)
        self.selected = set()
        self.app.call_from_thread(self.reload)


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
        except Exception as exc:
            self.notify(str(exc), severity="error")
            return

        def done(values: dict | None) -> None:
            if values is not None:
                self._do(lambda: f"triggered {self.app.ops.trigger(dag_id, values['date'], values['conf'])}")

        self.app.push_screen(TriggerDialog(dag_id, params), done)

    def action_backfill(self) -> None:
        from flowtui.app.dialogs import BackfillDialog

        dag_id = self._dag_id()
        if not dag_id:
            return

        def done(values: dict | None) -> None:
            if values is not None:
                self._do(lambda: f"backfill {self.app.ops.backfill_start(dag_id, values)} started")

        self.app.push_screen(BackfillDialog(dag_id, lambda v: self.app.ops.backfill_plan(dag_id, v)),
                             done)

    def action_pause(self) -> None:
        from flowtui.app.dialogs import ConfirmDialog

        dag_id = self._dag_id()
        if not dag_id:
            return
        paused = self._paused(dag_id)
        verb = "Unpause" if paused else "Pause"
        what = ("its schedule resumes; missed intervals are caught up if catchup is on"
                if paused else "no new scheduled runs are created or started")

        def done(ok: bool | None) -> None:
            if ok:
                self._do(lambda: (self.app.ops.set_paused(dag_id, not paused),
                                  f"{dag_id} {verb.lower()}d")[1])

        self.app.push_screen(ConfirmDialog(f"{verb} {dag_id}?", [f"  {what}"], verb), done)

    @work(thread=True, group="act", exit_on_error=False)
    def _do(self, call: Any) -> None:
        try:
            message = call()
        except Exception as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error", timeout=8)
            return
        self.app.call_from_thread(self.notify, message, timeout=4)
        self.app.call_from_thread(self.reload)


