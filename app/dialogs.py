"""Dialogs that confirm a change, name exactly what it changes and show the keys they take."""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Static
from textual.worker import Worker, WorkerState

from flowtui.runner.actions import ActionError

T = TypeVar("T")


def plain(text: str) -> Content:
    """Text shown exactly as written: a key label like ``[y]`` or a task id is never markup."""
    return Content(text)


class KeyButton(Button):
    """A button labelled with its key as visible text. It never takes focus, so Enter always
    reaches the dialog (which confirms) instead of pressing whichever button had focus."""

    can_focus = False

    def __init__(self, label: str, key: str, *, id: str, variant: Any = "default",
                 disabled: bool = False) -> None:
        super().__init__(plain(f"{label} [{key}]"), variant, id=id, disabled=disabled)


class OptionBox(Checkbox, inherit_bindings=False):
    """A checkbox whose state reads as text, ``[x]`` or ``[ ]`` (not colour alone), toggled by
    space or its letter; Enter is left to the dialog, where it confirms."""

    BINDINGS = [Binding("space", "toggle_button", "Toggle", show=False)]

    def __init__(self, label: str, key: str, value: bool, *, id: str) -> None:
        super().__init__(plain(f"{label} [{key}]"), value, id=id)

    @property
    def _button(self) -> Content:
        return Content.styled("[x]", "bold") if self.value else Content("[ ]")


class Dialog(ModalScreen[T]):
    """The frame every flowtui dialog shares: a title, what changes, the keys, the buttons."""

    def keys_line(self, text: str) -> Static:
        return Static(plain(text), classes="keys")

    def say(self, widget_id: str, text: str) -> None:
        self.query_one(f"#{widget_id}", Static).update(plain(text))


class ConfirmDialog(Dialog[bool]):
    """Yes or no, with the list of what will change."""

    BINDINGS = [Binding("escape,n", "cancel", "Cancel", id="dialog-cancel"),
                Binding("y,enter", "confirm", "Confirm", id="dialog-confirm")]

    def __init__(self, title: str, lines: list[str], confirm: str = "Confirm") -> None:
        super().__init__()
        self.title_text, self.lines, self.confirm_label = title, lines, confirm

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(plain(self.title_text), classes="title")
            yield Static(plain("\n".join(self.lines) or "(nothing)"), classes="changes")
            yield self.keys_line(f"[y]/[enter] {self.confirm_label.lower()}   [n]/[esc] cancel")
            with Horizontal(classes="buttons"):
                yield KeyButton("Cancel", "n", id="cancel")
                yield KeyButton(self.confirm_label, "y", id="confirm", variant="warning")

    @on(Button.Pressed, "#confirm")
    def action_confirm(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(False)


Planner = Callable[[dict[str, bool]], list[str]]  # options -> the tasks they change, in order


class PlannedDialog(Dialog[dict | None]):
    """A dialog listing the tasks an action changes. What the list is worked out from (the DAG
    and the run's task states) is read once, in a thread; each option toggled then re-plans at
    once from it. Confirming needs the list for the options shown, so what is confirmed is what
    was on screen."""

    WORKING = "working out which tasks this changes..."

    class PlannerLoaded(Message):
        """What the list is worked out from was read."""

        bubble = False

        def __init__(self, planner: Planner) -> None:
            super().__init__()
            self.planner = planner

    def __init__(self, run_label: str, load: Callable[[], Planner],
                 options: dict[str, bool]) -> None:
        super().__init__()
        self.run_label, self.load, self.options = run_label, load, options
        self.planner: Planner | None = None
        self.affected: list[str] | None = None

    def on_mount(self) -> None:
        self._load()

    def describe(self, affected: list[str]) -> str:
        raise NotImplementedError

    @work(thread=True, exclusive=True, group="plan", exit_on_error=False)
    def _load(self) -> None:
        self.post_message(self.PlannerLoaded(self.load()))

    @on(PlannerLoaded)
    def _planner_loaded(self, message: PlannerLoaded) -> None:
        self.planner = message.planner
        self._replan()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "plan" and event.state == WorkerState.ERROR:
            self.say("changes", f"cannot tell which tasks change: {event.worker.error}")

    def _replan(self) -> None:
        if self.planner is None:
            return  # still reading; the list follows with the options as they are then
        try:
            self.affected = self.planner(dict(self.options))
        except ActionError as error:  # a selected task is no longer in the DAG's file
            self.affected = None
            self.say("changes", f"cannot tell which tasks change: {error}")
            return
        self.say("changes", self.describe(self.affected))

    def action_toggle(self, name: str) -> None:
        self.query_one(f"#{name}", OptionBox).toggle()

    @on(Checkbox.Changed)
    def _changed(self, event: Checkbox.Changed) -> None:
        self.options[event.checkbox.id or ""] = event.value
        self._replan()

    def ready(self) -> bool:
        """The list for the options shown is on screen, and it is not empty."""
        if self.affected is None:
            self.notify("still working out which tasks change; confirm again in a moment",
                        markup=False, timeout=2)
            return False
        if not self.affected:
            self.notify("no task matches these options: nothing would change", markup=False,
                        timeout=3)
            return False
        return True

    def action_cancel(self) -> None:
        self.dismiss(None)


def task_lines(affected: list[str]) -> str:
    return "\n".join(f"  {t}" for t in affected) or "  (no task matches)"


class ClearDialog(PlannedDialog):
    """Clear: the tasks it resets, with downstream / upstream / failed-only as options."""

    BINDINGS = [Binding("escape,n", "cancel", "Cancel", id="clear-cancel"),
                Binding("y,enter", "confirm", "Clear", id="clear-confirm"),
                Binding("d", "toggle('downstream')", "Downstream", id="clear-downstream"),
                Binding("u", "toggle('upstream')", "Upstream", id="clear-upstream"),
                Binding("f", "toggle('failed_only')", "Failed only", id="clear-failed")]

    def __init__(self, run_label: str, load: Callable[[], Planner],
                 options: dict[str, bool] | None = None) -> None:
        super().__init__(run_label, load, options or {"downstream": True, "upstream": False,
                                                      "failed_only": False})

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(plain(f"Clear tasks of {self.run_label}"), classes="title")
            yield OptionBox("downstream", "d", self.options["downstream"], id="downstream")
            yield OptionBox("upstream", "u", self.options["upstream"], id="upstream")
            yield OptionBox("failed only", "f", self.options["failed_only"], id="failed_only")
            yield Static(plain(self.WORKING), id="changes", classes="changes")
            yield self.keys_line("[y]/[enter] clear   [d] [u] [f]/[space] toggle   "
                                 "[n]/[esc] cancel")
            with Horizontal(classes="buttons"):
                yield KeyButton("Cancel", "n", id="cancel")
                yield KeyButton("Clear", "y", id="confirm", variant="warning")

    def describe(self, affected: list[str]) -> str:
        return (f"These {len(affected)} task(s) go back to none and run again, with their full "
                "retries (a running one is stopped first):\n" + task_lines(affected))

    @on(Button.Pressed, "#confirm")
    def action_confirm(self) -> None:
        if self.ready():
            self.dismiss(dict(self.options))

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.dismiss(None)


class MarkDialog(PlannedDialog):
    """Mark: choose success, failed or skipped; the tasks it sets are listed."""

    BINDINGS = [Binding("escape,n", "cancel", "Cancel", id="mark-cancel"),
                Binding("s", "pick('success')", "Success", id="mark-success"),
                Binding("f", "pick('failed')", "Failed", id="mark-failed"),
                Binding("k", "pick('skipped')", "Skipped", id="mark-skipped"),
                Binding("d", "toggle('downstream')", "Downstream", id="mark-downstream"),
                Binding("enter", "explain", "Confirm", show=False, id="mark-enter")]

    def __init__(self, run_label: str, load: Callable[[], Planner]) -> None:
        super().__init__(run_label, load, {"downstream": False, "upstream": False})

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(plain(f"Mark tasks of {self.run_label}"), classes="title")
            yield OptionBox("downstream too", "d", False, id="downstream")
            yield Static(plain(self.WORKING), id="changes", classes="changes")
            yield self.keys_line("Set them to:  [s] success   [f] failed   [k] skipped   "
                                 "[n]/[esc] cancel")
            with Horizontal(classes="buttons"):
                yield KeyButton("Cancel", "n", id="cancel")
                yield KeyButton("success", "s", id="success", variant="success")
                yield KeyButton("failed", "f", id="failed", variant="error")
                yield KeyButton("skipped", "k", id="skipped")

    def describe(self, affected: list[str]) -> str:
        return ("These task(s) change state (a running one is stopped first; one that already "
                "ended keeps its times):\n" + task_lines(affected))

    def action_pick(self, state: str) -> None:
        if self.ready():
            self.dismiss({**self.options, "state": state})

    def action_explain(self) -> None:
        # Enter cannot know which state is meant; it says so instead of guessing.
        self.notify("choose the state: s success, f failed, k skipped", markup=False, timeout=3)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.dismiss(None)
        else:
            self.action_pick(event.button.id or "success")


class TriggerDialog(Dialog[dict | None]):
    """Trigger a manual run: logical date and conf, the JSON checked before it is sent."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="trigger-cancel")]

    def __init__(self, dag_id: str, params: dict[str, Any]) -> None:
        super().__init__()
        self.dag_id, self.params = dag_id, params

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(plain(f"Trigger a run of {self.dag_id}"), classes="title")
            yield Label(plain("Logical date (YYYY-MM-DD, empty for now)"))
            yield Input(placeholder="2026-01-31", id="date")
            yield Label(plain(f"Conf (JSON object; params: {json.dumps(self.params)})"))
            yield Input(value="{}", id="conf")
            yield Static("", id="error", classes="error")
            yield self.keys_line("[enter] trigger   [tab] next field   [esc] cancel")
            with Horizontal(classes="buttons"):
                yield KeyButton("Cancel", "esc", id="cancel")
                yield KeyButton("Trigger", "enter", id="confirm", variant="primary")

    @on(Input.Submitted)
    @on(Button.Pressed, "#confirm")
    def _submit(self) -> None:
        date = self.query_one("#date", Input).value.strip()
        text = self.query_one("#conf", Input).value.strip() or "{}"
        try:
            conf = json.loads(text)
        except json.JSONDecodeError as exc:
            self.say("error", f"conf is not valid JSON: {exc.msg} at character {exc.pos}")
            return
        if not isinstance(conf, dict):
            self.say("error", "conf must be a JSON object, like {\"x\": 1}")
            return
        if date:
            import datetime as dt

            try:
                dt.date.fromisoformat(date) if len(date) == 10 else dt.datetime.fromisoformat(date)
            except ValueError:
                self.say("error", "date must be YYYY-MM-DD or ISO datetime")
                return
        self.dismiss({"date": date or None, "conf": conf})

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
