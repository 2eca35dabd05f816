"""Alert policies and channels from flowtui.toml, and the alerts the runner raises.

An alert is one row per (kind, dag, run, task): ``open`` -> ``acked`` -> ``resolved``. Raising
one fires its policies' first step; later steps fire while it stays un-acked; a success of the
task or run resolves it. Each notification is a queued delivery that a sender thread sends (so
a slow endpoint never slows the runner).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from flowtui.runner.durations import parse_duration
from flowtui.store import Store, current_user
from flowtui.store.alerts import Alert

KINDS = ("task_failed", "task_retry", "sla_at_risk", "sla_miss", "zombie", "hung", "circuit_open",
         "runner_degraded", "dataset_stale", "host_lost")
CHANNEL_TYPES = ("slack", "pagerduty", "webhook", "command")
SEVERITY = {"task_failed": "error", "task_retry": "info", "sla_at_risk": "warning",
            "sla_miss": "critical", "zombie": "error", "hung": "error", "circuit_open": "critical",
            "runner_degraded": "error", "dataset_stale": "warning", "host_lost": "critical"}
PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
MAX_CHANNEL_TIMEOUT = 300.0
MAX_ALERT_ID = 2**63 - 1  # SQLite's INTEGER range; nothing larger can name an alert


@dataclass(slots=True)
class Channel:
    name: str
    type: str
    settings: dict[str, Any]
    timeout: float | None = None  # the total deadline of one attempt; None: the sender's

    def secret(self, key: str) -> str | None:
        """The value of a setting, reading ``env:NAME`` references at the moment of use."""
        value = self.settings.get(key)
        if isinstance(value, str) and value.startswith("env:"):
            return os.environ.get(value[4:])
        return value

    def target(self) -> str:
        """Where it sends, redacted (no path, no query, no key): safe to show and log."""
        if self.type == "command":
            return "command"
        raw = self.settings.get("url") or (PAGERDUTY_URL if self.type == "pagerduty" else "")
        if isinstance(raw, str) and raw.startswith("env:"):
            return f"${raw[4:]} (redacted)"
        from urllib.parse import urlsplit

        parts = urlsplit(str(raw))
        return f"{parts.scheme}://{parts.hostname}/…" if parts.hostname else "(redacted)"


@dataclass(slots=True)
class Step:
    after: float
    notify: list[str]


@dataclass(slots=True)
class Policy:
    name: str
    on: list[str]
    steps: list[Step]
    on_sla_miss: list[str] = field(default_factory=list)


@dataclass(slots=True)
class AlertConfig:
    channels: dict[str, Channel] = field(default_factory=dict)
    policies: dict[str, Policy] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def parse_alerting(raw: dict[str, Any], where: str = "flowtui.toml") -> AlertConfig:
    """Channels and policies; every problem is one line naming the key. A broken channel or
    policy is left out and the rest still work."""
    config = AlertConfig()
    channels = raw.get("channels", {}) or {}
    if not isinstance(channels, dict):
        config.errors.append(f"{where}: [channels] must be tables such as [channels.slack]")
        channels = {}
    for name, settings in channels.items():
        key = f"channels.{name}"
        if not isinstance(settings, dict):
            config.errors.append(f"{where}: {key} must be a table")
            continue
        kind = settings.get("type")
        if kind not in CHANNEL_TYPES:
            config.errors.append(f"{where}: {key}.type: unknown channel type {kind!r}; use "
                                 f"{', '.join(CHANNEL_TYPES)}")
            continue
        needed = {"slack": "url", "webhook": "url", "pagerduty": "routing_key",
                  "command": "command"}[kind]
        if not settings.get(needed):
            config.errors.append(f"{where}: {key}.{needed} is required for a {kind} channel")
            continue
        missing = [f"{key}.{k} (env:{v[4:]} is not set)" for k, v in settings.items()
                   if isinstance(v, str) and v.startswith("env:") and v[4:] not in os.environ]
        if missing:
            config.errors.append(f"{where}: {', '.join(missing)}; set the variable in the "
                                 "runner's environment")
            continue
        try:
            timeout = _channel_timeout(settings.get("timeout"))
        except ValueError as exc:
            config.errors.append(f"{where}: {key}.timeout: {exc}")
            continue
        config.channels[name] = Channel(name, kind, dict(settings), timeout)
    policies = raw.get("policies", {}) or {}
    for name, settings in (policies.items() if isinstance(policies, dict) else []):
        key = f"policies.{name}"
        try:
            config.policies[name] = _policy(name, settings, key, set(channels))
        except ValueError as exc:
            config.errors.append(f"{where}: {exc}")
    return config


def _channel_timeout(value: Any) -> float | None:
    """How long one attempt may take in all, connect to last byte (``timeout = "30s"``)."""
    if value is None:
        return None
    seconds = parse_duration(value)
    if not 0 < seconds <= MAX_CHANNEL_TIMEOUT:
        raise ValueError(f"{value!r} is out of range; use more than 0s and at most "
                         f"{MAX_CHANNEL_TIMEOUT:g}s")
    return seconds


def _policy(name: str, settings: Any, key: str, channel_names: set[str]) -> Policy:
    if not isinstance(settings, dict):
        raise ValueError(f"{key} must be a table")
    kinds = settings.get("on", list(KINDS))
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"{key}.on: unknown alert kind {kind!r}; use {', '.join(KINDS)}")
    steps = []
    for index, step in enumerate(settings.get("steps", []) or []):
        where = f"{key}.steps[{index}]"
        if not isinstance(step, dict):
            raise ValueError(f"{where} must be a table like {{after = \"0m\", notify = [\"slack\"]}}")
        try:
            after = parse_duration(step.get("after", 0))
        except ValueError as exc:
            raise ValueError(f"{where}.after: {exc}") from None
        notify = list(step.get("notify", []) or [])
        for channel in notify:
            if channel not in channel_names:
                raise ValueError(f"{where}.notify: unknown channel {channel!r}; define "
                                 f"[channels.{channel}]")
        steps.append(Step(after, notify))
    on_sla_miss = list(settings.get("on_sla_miss", []) or [])
    for channel in on_sla_miss:
        if channel not in channel_names:
            raise ValueError(f"{key}.on_sla_miss: unknown channel {channel!r}; define "
                             f"[channels.{channel}]")
    steps.sort(key=lambda s: s.after)
    return Policy(name, list(kinds), steps, on_sla_miss)


def dag_policy_errors(config: AlertConfig, dags: dict[str, Any]) -> list[str]:
    errors = []
    for dag in dags.values():
        for name in dag.alerts:
            if name not in config.policies:
                errors.append(f"{dag.fileloc}: DAG {dag.dag_id!r}: alerts: unknown policy "
                              f"{name!r}; define [policies.{name}] in flowtui.toml")
    return errors


class Alerts:
    """Raising, escalating, acking and resolving alerts (runs in the daemon's loop). Time is the
    store's clock unless a ``now`` is given.

    Escalation is armed, not polled: ``arm(at)`` is called whenever a step comes due earlier
    than any time armed before (a raise, or an ``escalate`` that leaves a step waiting); the
    caller sets a timer that calls ``escalate`` then."""

    def __init__(self, store: Store, config: AlertConfig, dags: dict[str, Any],
                 wake_sender: Callable[[], None] | None = None,
                 arm: Callable[[float], None] | None = None) -> None:
        self.store = store
        self.records = store.alerts
        self.config = config
        self.dags = dags
        self.wake_sender = wake_sender or (lambda: None)
        self.arm = arm or (lambda at: None)
        self._armed_at: float | None = None  # the earliest timer set and not yet run

    def policies(self, dag_id: str, kind: str) -> list[Policy]:
        """The policies an alert goes through: its DAG's; an alert about no DAG (the runner
        itself) goes through every policy that lists its kind."""
        if not dag_id:
            names: list[str] = list(self.config.policies)
        else:
            dag = self.dags.get(dag_id)
            names = dag.alerts if dag is not None else []
        return [self.config.policies[n] for n in names
                if n in self.config.policies and kind in self.config.policies[n].on]


    def raise_alert(self, kind: str, dag_id: str, run_id: str = "", task_id: str = "",
                    summary: str = "", now: float | None = None) -> int | None:
        """Open an alert (or reopen a resolved one); fire its first steps. None if it was
        already open or acked (one alert per kind, DAG, run and task)."""
        now = self.store.now() if now is None else now
        policies = self.policies(dag_id, kind)
        with self.store.transaction():
            known = self.records.find(kind, dag_id, run_id, task_id)
            if known is not None and known.state != "resolved":
                return None
            if known is None:
                alert_id = self.records.insert(kind, dag_id, run_id, task_id, SEVERITY[kind],
                                               summary, now)
            else:
                alert_id = known.id
                self.records.reopen(alert_id, summary, now)
            next_at = self._fire_due(alert_id, policies, 0, now, now)
            if kind == "sla_miss":
                for policy in policies:
                    for channel in policy.on_sla_miss:
                        self.records.enqueue(alert_id, channel, "trigger", now)
        self.wake_sender()
        self._arm(next_at)
        return alert_id

    def _fire_due(self, alert_id: int, policies: list[Policy], level: int, created: float,
                  now: float) -> float | None:
        """Fire every step due by ``now`` from ``level`` on; set and return the next step's
        time."""
        steps = sorted((step for p in policies for step in p.steps), key=lambda s: s.after)
        while level < len(steps) and created + steps[level].after <= now + 1e-6:
            for channel in steps[level].notify:
                self.records.enqueue(alert_id, channel, "trigger", now)
            level += 1
        next_at = created + steps[level].after if level < len(steps) else None
        self.records.set_level(alert_id, level, next_at, now)
        return next_at

    def _arm(self, at: float | None) -> None:
        if at is not None and (self._armed_at is None or at < self._armed_at):
            self._armed_at = at
            self.arm(at)

    def escalate(self, now: float | None = None) -> float | None:
        """Fire the steps that came due for alerts still open (acked ones never escalate);
        return when the next step of any open alert is due (None: none is waiting)."""
        now = self.store.now() if now is None else now
        if self._armed_at is not None and self._armed_at <= now:
            self._armed_at = None  # that timer is this call
        if self.records.due_steps(now):
            with self.store.transaction():
                # Read again under the write lock: a runner on another host may have fired
                # these steps a moment ago (each step fires once, whoever looks).
                due = self.records.due_steps(now)
                for alert in due:
                    self._fire_due(alert.id, self.policies(alert.dag_id, alert.kind),
                                   alert.level, alert.created_at, now)
            self.wake_sender()
        next_at = self.records.next_step_at()
        self._arm(next_at)
        return next_at

    def next_escalation(self) -> float | None:
        """When ``escalate`` has work next: the earliest next step of an open alert."""
        return self.records.next_step_at()

    def resolve_matching(self, dag_id: str, run_id: str, task_id: str | None,
                         now: float | None, kinds: tuple[str, ...],
                         states: tuple[str, ...] = ("open", "acked")) -> None:
        """The task (or run) succeeded: its alerts (in one of ``states``) resolve themselves."""
        now = self.store.now() if now is None else now
        ids = self.records.matching(dag_id, run_id, task_id, kinds=kinds, states=states)
        for alert_id in ids:
            try:
                set_alert_state(self.store, alert_id, "resolved", user="runner", now=now)
            except AlertError:
                pass  # resolved by an operator a moment ago
        if ids:
            self.wake_sender()


class AlertError(Exception):
    """An alert action that cannot apply; the message says why."""


def set_alert_state(store: Store, alert_id: int, state: str, *, user: str | None = None,
                    now: float | None = None) -> None:
    """Ack or resolve (audited); channels that were paged get an acknowledge or a resolve."""
    now = store.now() if now is None else now
    user = user or current_user()
    if isinstance(alert_id, bool) or not isinstance(alert_id, int) or \
            not 0 < alert_id <= MAX_ALERT_ID:
        raise AlertError(f"no alert {alert_id}; 'flowtui alerts list' lists them")
    records = store.alerts
    with store.transaction() as conn:
        alert = records.get(alert_id)
        if alert is None:
            raise AlertError(f"no alert {alert_id}; 'flowtui alerts list' lists them")
        old = alert.state
        if old == state or old == "resolved" or (state == "acked" and old != "open"):
            raise AlertError(f"alert {alert_id} is {old}; it cannot become {state}")
        if state == "acked":
            records.ack(alert_id, user, now)
        else:
            records.resolve(alert_id, now)
        action = "acknowledge" if state == "acked" else "resolve"
        for channel in records.triggered_channels(alert_id):
            records.enqueue(alert_id, channel, action, now)
        if user != "runner":
            store.audit(conn, "ack" if state == "acked" else "resolve", dag_id=alert.dag_id,
                        run_id=alert.run_id or None, task_id=alert.task_id or None, user=user,
                        detail={"alert_id": alert_id})


def alert_json(alert: Alert) -> dict[str, Any]:
    """An alert as ``alerts list --json`` shows it (times in ISO 8601)."""
    from flowtui.runner.clock import iso

    data = asdict(alert)
    data["created_at"] = iso(alert.created_at)
    data["next_step_at"] = iso(alert.next_step_at)
    return data


__all__ = ["Alert", "AlertConfig", "AlertError", "Alerts", "Channel", "parse_alerting",
           "set_alert_state"]
