"""Dialogs that confirm a change and name exactly what it changes."""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, Static


class ConfirmDialog(ModalScreen[bool]):
    """Yes or no, with the list of what will change."""

    BINDINGS = [Binding("escape,n", "cancel", "Cancel", id="dialog-cancel"),
                Binding("y", "confirm", "Confirm", id="dialog-confirm")]

    def __init__(self, title: str, lines: list[str], confirm: str = "Confirm") -> None:
        super().__init__()
        self.title_text, self.lines, self.confirm_label = title, lines, confirm

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="title")
            yield Static("\n".join(self.lines) or "(nothing)", classes="changes")
            with Horizontal(classes="buttons"):
                yield Button("Cancel [n]", id="cancel")
                yield Button(f"{self.confirm_label} [y]", id="confirm", variant="warning")

    @on(Button.Pressed, "#confirm")
    def action_confirm(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(False)


class ClearDialog(ModalScreen[dict | None]):
    """Clear: the tasks it resets, with downstream / upstream / failed-only as toggles."""

    BINDINGS = [Binding("escape,n", "cancel", "Cancel", id="clear-cancel"),
                Binding("y", "confirm", "Clear", id="clear-confirm"),
                Binding("d", "toggle('downstream')", "Downstream", id="clear-downstream"),
                Binding("u", "toggle('upstream')", "Upstream", id="clear-upstream"),
                Binding("f", "toggle('failed_only')", "Failed only", id="clear-failed")]

    def __init__(self, run_label: str, plan: Callable[[dict], list[str]],
                 options: dict[str, bool] | None = None) -> None:
        super().__init__()
        self.run_label = run_label
        self.plan = plan
        self.options = options or {"downstream": True, "upstream": False, "failed_only": False}

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Clear tasks of {self.run_label}", classes="title")
            yield Checkbox("downstream [d]", self.options["downstream"], id="downstream")
            yield Checkbox("upstream [u]", self.options["upstream"], id="upstream")
            yield Checkbox("failed only [f]", self.options["failed_only"], id="failed_only")
            yield Static("", id="changes", classes="changes")
            with Horizontal(classes="buttons"):
                yield Button("Cancel [n]", id="cancel")
                yield Button("Clear [y]", id="confirm", variant="warning")

    def on_mount(self) -> None:
        self._replan()

    def _replan(self) -> None:
        self.affected = self.plan(self.options)
        lines = [f"  {t}" for t in self.affected] or ["  (no task matches)"]
        self.query_one("#changes", Static).update(
            f"These {len(self.affected)} task(s) go back to none and run again, "
            "with their full retries:\n" + "\n".join(lines))

    def action_toggle(self, name: str) -> None:
        box = self.query_one(f"#{name}", Checkbox)
        box.value = not box.value

    @on(Checkbox.Changed)
    def _changed(self, event: Checkbox.Changed) -> None:
        self.options[event.checkbox.id or ""] = event.value
        self._replan()

    @on(Button.Pressed, "#confirm")
    def action_confirm(self) -> None:
        if self.affected:
            self.dismiss(dict(self.options))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class MarkDialog(ModalScreen[dict | None]):
    """Mark: choose success, failed or skipped; the tasks it sets are listed."""

    BINDINGS = [Binding("escape,n", "cancel", "Cancel", id="mark-cancel"),
                Binding("s", "pick('success')", "Success", id="mark-success"),
                Binding("f", "pick('failed')", "Failed", id="mark-failed"),
                Binding("k", "pick('skipped')", "Skipped", id="mark-skipped"),
                Binding("d", "toggle", "Downstream", id="mark-downstream")]

    def __init__(self, run_label: str, plan: Callable[[dict], list[str]]) -> None:
        super().__init__()
        self.run_label, self.plan = run_label, plan
        self.options: dict[str, Any] = {"downstream": False, "upstream": False}

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Mark tasks of {self.run_label}", classes="title")
            yield Checkbox("downstream too [d]", False, id="downstream")
            yield Static("", id="changes", classes="changes")
            yield Static("Set them to:  [s] success   [f] failed   [k] skipped   [n] cancel")
            with Horizontal(classes="buttons"):
                yield Button("Cancel [n]", id="cancel")
                yield Button("success [s]", id="success", variant="success")
                yield Button("failed [f]", id="failed", variant="error")
                yield Button("skipped [k]", id="skipped")

    def on_mount(self) -> None:
        self._replan()

    def _replan(self) -> None:
        self.affected = self.plan(self.options)
        self.query_one("#changes", Static).update(
            "These task(s) change state (a running one is stopped first):\n" +
            "\n".join(f"  {t}" for t in self.affected))

    def action_toggle(self) -> None:
        box = self.query_one("#downstream", Checkbox)
        box.value = not box.value

    @on(Checkbox.Changed)
    def _changed(self, event: Checkbox.Changed) -> None:
        self.options["downstream"] = event.value
        self._replan()

    def action_pick(self, state: str) -> None:
        self.dismiss({**self.options, "state": state})

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.dismiss(None)
        else:
            self.action_pick(event.button.id or "success")

    def action_cancel(self) -> None:
        self.dismiss(None)


class TriggerDialog(ModalScreen[dict | None]):
    """Trigger a manual run: logical date and conf, the JSON checked before it is sent."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="trigger-cancel")]

    def __init__(self, dag_id: str, params: dict[str, Any]) -> None:
        super().__init__()
        self.dag_id, self.params = dag_id, params

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Trigger a run of {self.dag_id}", classes="title")
            yield Label("Logical date (YYYY-MM-DD, empty for now)")
            yield Input(placeholder="2026-01-31", id="date")
            yield Label(f"Conf (JSON object; params: {json.dumps(self.params)})")
            yield Input(value="{}", id="conf")
            yield Static("", id="error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel [esc]", id="cancel")
                yield Button("Trigger [enter]", id="confirm", variant="primary")

    @on(Input.Submitted)
    @on(Button.Pressed, "#confirm")
    def _submit(self) -> None:
        date = self.query_one("#date", Input).value.strip()
        text = self.query_one("#conf", Input).value.strip() or "{}"
        try:
            conf = json.loads(text)
        except json.JSONDecodeError as exc:
            self.query_one("#error", Static).update(f"conf is not valid JSON: {exc.msg} at "
                                                    f"character {exc.pos}")
            return
        if not isinstance(conf, dict):
            self.query_one("#error", Static).update("conf must be a JSON object, like {\"x\": 1}")
            return
        if date:
            import datetime as dt

            try:
                dt.date.fromisoformat(date) if len(date) == 10 else dt.datetime.fromisoformat(date)
            except ValueError:
                self.query_one("#error", Static).update("date must be YYYY-MM-DD or ISO datetime")
                return
        self.dismiss({"date": date or None, "conf": conf})

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class BackfillDialog(ModalScreen[dict | None]):
    """Backfill: range, parallelism, order and reprocess; it starts only after a preview."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="backfill-cancel")]

    def __init__(self, dag_id: str, preview: Callable[[dict], tuple[list[str], str | None]]) -> None:
        super().__init__()
        self.dag_id, self.preview = dag_id, preview
        self.previewed: dict | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Backfill {self.dag_id}", classes="title")
            with Horizontal(classes="buttons"):
                yield Input(placeholder="start YYYY-MM-DD", id="start")
                yield Input(placeholder="end YYYY-MM-DD", id="end")
                yield Input(value="1", id="parallelism")
            with Horizontal(classes="buttons"):
                yield Select([("oldest first", "oldest-first"), ("newest first", "newest-first")],
                             value="oldest-first", allow_blank=False, id="order")
                yield Select([("skip dates with runs", "none"), ("re-run failed", "failed"),
                              ("re-run all finished", "completed")], value="none",
                             allow_blank=False, id="reprocess")
            yield Static("Preview the runs before starting them.", id="plan", classes="changes")
            yield Static("", id="error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel [esc]", id="cancel")
                yield Button("Preview", id="preview", variant="primary")
                yield Button("Start", id="start-backfill", variant="warning", disabled=True)

    def _values(self) -> dict:
        return {"start": self.query_one("#start", Input).value.strip(),
                "end": self.query_one("#end", Input).value.strip(),
                "parallelism": self.query_one("#parallelism", Input).value.strip() or "1",
                "order": self.query_one("#order", Select).value,
                "reprocess": self.query_one("#reprocess", Select).value}

    @on(Input.Changed)
    @on(Select.Changed)
    def _edited(self) -> None:
        self.previewed = None
        self.query_one("#start-backfill", Button).disabled = True

    @on(Input.Submitted)
    @on(Button.Pressed, "#preview")
    def _preview(self) -> None:
        values = self._values()
        lines, error = self.preview(values)
        self.query_one("#error", Static).update(error or "")
        self.query_one("#plan", Static).update("\n".join(lines))
        if error is None:
            self.previewed = values
            self.query_one("#start-backfill", Button).disabled = False

    @on(Button.Pressed, "#start-backfill")
    def _start(self) -> None:
        if self.previewed is not None and self.previewed == self._values():
            self.dismiss(self.previewed)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
