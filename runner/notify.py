"""The sender: delivers queued notifications in its own thread, with a timeout and retries
with exponential backoff, recording every attempt. Secrets are read from the environment at the
moment of sending and never written anywhere."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from flowtui.runner.alerting import PAGERDUTY_URL, AlertConfig, Channel
from flowtui.store import Store

TIMEOUT = 5.0
MAX_ATTEMPTS = 5
BACKOFF = 1.0


class Sender(threading.Thread):
    def __init__(self, db_path: Path, config: AlertConfig, *, timeout: float = TIMEOUT,
                 backoff: float = BACKOFF) -> None:
        super().__init__(name="flowtui-sender", daemon=True)
        self.db_path = db_path
        self.config = config
        self.timeout = timeout
        self.backoff = backoff
        self.event = threading.Event()
        self.stopping = False

    def wake(self) -> None:
        self.event.set()

    def stop(self) -> None:
        self.stopping = True
        self.event.set()

    def run(self) -> None:
        store = Store.open(self.db_path)
        try:
            while not self.stopping:
                try:
                    wait = self._send_due(store)
                except Exception as exc:  # the store was busy, a bug: keep delivering anyway
                    print(f"flowtui runner: sender: {type(exc).__name__}: {exc}; retrying",
                          file=sys.stderr, flush=True)
                    wait = self.backoff
                self.event.wait(wait)
                self.event.clear()
        finally:
            store.close()

    def _send_due(self, store: Store) -> float | None:
        now = time.time()
        rows = store.conn.execute(
            "SELECT d.id, d.channel, d.action, d.attempts, a.id, a.kind, a.dag_id, a.run_id, "
            "a.task_id, a.state, a.severity, a.level, a.summary, a.created_at FROM deliveries d "
            "JOIN alerts a ON a.id = d.alert_id WHERE d.status = 'pending' AND "
            "d.next_attempt_at <= ? ORDER BY d.id LIMIT 50", (now,)).fetchall()
        for row in rows:
            if self.stopping:
                return None
            delivery_id, channel_name, action, attempts = row[:4]
            alert = dict(zip(("id", "kind", "dag_id", "run_id", "task_id", "state", "severity",
                              "level", "summary", "created_at"), row[4:]))
            channel = self.config.channels.get(channel_name)
            ok, detail = (False, f"channel {channel_name!r} is not configured") if channel is None \
                else self._send(channel, action, alert)
            attempts += 1
            done = ok or attempts >= MAX_ATTEMPTS or channel is None
            status = "sent" if ok else ("failed" if done else "pending")
            next_at = time.time() + self.backoff * (2 ** (attempts - 1))
            with store.transaction() as conn:
                conn.execute("INSERT INTO delivery_attempts (delivery_id, at, ok, detail) "
                             "VALUES (?, ?, ?, ?)", (delivery_id, time.time(), int(ok), detail))
                conn.execute("UPDATE deliveries SET status = ?, attempts = ?, last_status = ?, "
                             "next_attempt_at = ?, updated_at = ? WHERE id = ?",
                             (status, attempts, detail, next_at, time.time(), delivery_id))
        row = store.conn.execute("SELECT min(next_attempt_at) FROM deliveries WHERE status = "
                                 "'pending'").fetchone()
        return None if row[0] is None else max(0.0, row[0] - time.time())

    def _send(self, channel: Channel, action: str, alert: dict[str, Any]) -> tuple[bool, str]:
        """One attempt; returns (ok, a detail with no secret in it)."""
        if channel.type == "slack" and action == "acknowledge":
            return True, "not sent: slack has no acknowledge"
        body = payload(channel, action, alert)
        try:
            if channel.type == "command":
                result = subprocess.run(["/bin/sh", "-c", str(channel.settings["command"])],
                                        input=json.dumps(body).encode(), timeout=self.timeout,
                                        capture_output=True)
                return result.returncode == 0, f"command exited {result.returncode}"
            import httpx

            url = channel.secret("url") or (PAGERDUTY_URL if channel.type == "pagerduty" else "")
            response = httpx.post(url, json=body, timeout=self.timeout)
            ok = 200 <= response.status_code < 300
            return ok, f"HTTP {response.status_code} from {channel.target()}"
        except subprocess.TimeoutExpired:
            return False, f"command timed out after {self.timeout:g}s"
        except Exception as exc:  # network errors: recorded, retried
            return False, f"{type(exc).__name__} sending to {channel.target()}"


def payload(channel: Channel, action: str, alert: dict[str, Any]) -> dict[str, Any]:
    """The JSON a channel receives for one alert event."""
    where = alert["dag_id"] + (f" / {alert['run_id']}" if alert["run_id"] else "") + (
        f" / {alert['task_id']}" if alert["task_id"] else "")
    if channel.type == "slack":
        icon = {"trigger": ":rotating_light:", "resolve": ":white_check_mark:"}.get(action, "")
        verb = "resolved" if action == "resolve" else alert["severity"].upper()
        return {"text": f"{icon} flowtui {verb} {alert['kind']}: {where}: {alert['summary']}"}
    if channel.type == "pagerduty":
        body: dict[str, Any] = {"routing_key": channel.secret("routing_key"),
                                "event_action": action, "dedup_key": f"flowtui-{alert['id']}"}
        if action == "trigger":
            body["payload"] = {
                "summary": f"{alert['kind']}: {where}: {alert['summary']}"[:1024],
                "source": socket.gethostname(), "severity": alert["severity"],
                "component": alert["dag_id"], "group": alert["dag_id"], "class": alert["kind"],
                "custom_details": {k: alert[k] for k in ("id", "dag_id", "run_id", "task_id",
                                                         "level", "summary")},
            }
        return body
    return {"event": action, "alert": alert}
