"""The sender: delivers queued notifications, each channel on its own, every attempt under one
total deadline (connect to last byte), with retries and exponential backoff, recording every
attempt. Secrets are read from the environment at the moment of sending and never written."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from flowtui.runner.alerting import PAGERDUTY_URL, AlertConfig, Channel
from flowtui.store import Store

TIMEOUT = 10.0  # the whole attempt, not one read: a server dripping bytes cannot stretch it
MAX_ATTEMPTS = 5
BACKOFF = 1.0
BODY_LIMIT = 64 * 1024  # the status is what counts; a huge answer is not kept in memory

_ALERT_KEYS = ("id", "kind", "dag_id", "run_id", "task_id", "state", "severity", "level",
               "summary", "created_at")


class Sender(threading.Thread):
    """One thread running an asyncio loop: a task per channel that has due deliveries, so a
    stuck endpoint holds only its own channel's queue."""

    def __init__(self, db_path: Path, config: AlertConfig, *, timeout: float = TIMEOUT,
                 backoff: float = BACKOFF) -> None:
        super().__init__(name="flowtui-sender", daemon=True)
        self.db_path = db_path
        self.config = config
        self.timeout = timeout
        self.backoff = backoff
        self.stopping = False
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    def wake(self) -> None:
        """Look for due deliveries now (safe from any thread)."""
        with self._lock:
            loop, event = self._loop, self._wake
        if loop is None or event is None:
            return  # not started yet: its first pass looks at everything anyway
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:
            pass  # the loop has closed: the sender is gone

    def stop(self) -> None:
        self.stopping = True
        self.wake()

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        import httpx

        with self._lock:
            self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        wake = self._wake
        store = Store.open(self.db_path)
        workers: dict[str, asyncio.Task[None]] = {}
        # No pool cap: each channel holds at most one connection, and a cap shared by all
        # channels would let stuck ones starve the others.
        client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False,
                                   limits=httpx.Limits(max_connections=None))
        try:
            while not self.stopping:
                wake.clear()
                try:
                    wait = self._dispatch(store, workers, client)
                except Exception as exc:  # the store was busy, a bug: keep delivering anyway
                    _report(exc)
                    wait = self.backoff
                if self.stopping:
                    break
                try:
                    await asyncio.wait_for(wake.wait(), wait)
                except TimeoutError:
                    pass
        finally:
            with self._lock:
                self._loop = None
            for task in workers.values():
                task.cancel()
            await asyncio.gather(*workers.values(), return_exceptions=True)
            await client.aclose()
            store.close()

    def _dispatch(self, store: Store, workers: dict[str, asyncio.Task[None]],
                  client: Any) -> float | None:
        """Start a worker for each channel with due deliveries and none running; return how
        long until the next delivery of an idle channel comes due."""
        for name in [n for n, task in workers.items() if task.done()]:
            del workers[name]
        due = store.conn.execute("SELECT DISTINCT channel FROM deliveries WHERE status = "
                                 "'pending' AND next_attempt_at <= ?", (time.time(),)).fetchall()
        for (name,) in due:
            if name not in workers:
                task = asyncio.create_task(self._deliver_channel(store, client, name))
                task.add_done_callback(lambda _: self._wake.set() if self._wake else None)
                workers[name] = task
        busy = list(workers)
        row = store.conn.execute(
            "SELECT min(next_attempt_at) FROM deliveries WHERE status = 'pending' AND channel "
            f"NOT IN ({','.join('?' * len(busy))})", busy).fetchone()
        return None if row[0] is None else max(0.0, row[0] - time.time())

    async def _deliver_channel(self, store: Store, client: Any, name: str) -> None:
        """Deliver this channel's due deliveries one at a time, oldest first, until none is due."""
        try:
            while not self.stopping:
                row = store.conn.execute(
                    "SELECT d.id, d.action, d.attempts, a.id, a.kind, a.dag_id, a.run_id, "
                    "a.task_id, a.state, a.severity, a.level, a.summary, a.created_at FROM "
                    "deliveries d JOIN alerts a ON a.id = d.alert_id WHERE d.channel = ? AND "
                    "d.status = 'pending' AND d.next_attempt_at <= ? ORDER BY d.id LIMIT 1",
                    (name, time.time())).fetchone()
                if row is None:
                    return
                delivery_id, action, attempts = row[:3]
                alert = dict(zip(_ALERT_KEYS, row[3:]))
                channel = self.config.channels.get(name)
                if channel is None:
                    ok, detail = False, f"channel {name!r} is not configured"
                else:
                    ok, detail = await self.attempt(client, channel, action, alert)
                self._record(store, delivery_id, attempts + 1, ok, detail,
                             final=channel is None)
        except Exception as exc:  # the store was busy, a bug: the next pass tries again
            _report(exc)
            await asyncio.sleep(self.backoff)

    def _record(self, store: Store, delivery_id: int, attempts: int, ok: bool, detail: str,
                *, final: bool) -> None:
        done = ok or final or attempts >= MAX_ATTEMPTS
        status = "sent" if ok else ("failed" if done else "pending")
        now = time.time()
        next_at = now + self.backoff * (2 ** (attempts - 1))
        with store.transaction() as conn:
            conn.execute("INSERT INTO delivery_attempts (delivery_id, at, ok, detail) "
                         "VALUES (?, ?, ?, ?)", (delivery_id, now, int(ok), detail))
            conn.execute("UPDATE deliveries SET status = ?, attempts = ?, last_status = ?, "
                         "next_attempt_at = ?, updated_at = ? WHERE id = ?",
                         (status, attempts, detail, next_at, now, delivery_id))

    async def attempt(self, client: Any, channel: Channel, action: str,
                      alert: dict[str, Any]) -> tuple[bool, str]:
        """One attempt, over by its deadline whatever the other side does; returns (ok, a
        detail with no secret in it)."""
        if channel.type == "slack" and action == "acknowledge":
            return True, "not sent: slack has no acknowledge"
        body = payload(channel, action, alert)
        deadline = channel.timeout or self.timeout
        try:
            async with asyncio.timeout(deadline):
                if channel.type == "command":
                    return await _run_command(str(channel.settings["command"]), body)
                return await _post(client, channel, body)
        except TimeoutError:
            return False, f"no complete answer within {deadline:g}s from {channel.target()}"
        except Exception as exc:  # network errors: recorded, retried
            return False, f"{type(exc).__name__} sending to {channel.target()}"


async def _post(client: Any, channel: Channel, body: dict[str, Any]) -> tuple[bool, str]:
    url = channel.secret("url") or (PAGERDUTY_URL if channel.type == "pagerduty" else "")
    async with client.stream("POST", url, json=body) as response:
        received = 0
        async for chunk in response.aiter_raw():
            received += len(chunk)
            if received > BODY_LIMIT:
                break
        ok = 200 <= response.status_code < 300
        return ok, f"HTTP {response.status_code} from {channel.target()}"


async def _run_command(command: str, body: dict[str, Any]) -> tuple[bool, str]:
    """The command reads the event as JSON on stdin; past the deadline its whole tree dies."""
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh", "-c", command, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True)
    try:
        await proc.communicate(json.dumps(body).encode())
    finally:
        if proc.returncode is None:
            _kill_tree(proc.pid)
            await proc.wait()
    return proc.returncode == 0, f"command exited {proc.returncode}"


def _kill_tree(pid: int) -> None:
    """SIGKILL a command's process group and every descendant (also those that left it)."""
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        children = []
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    for child in children:
        try:
            child.kill()
        except psutil.Error:
            pass


def _report(exc: Exception) -> None:
    print(f"flowtui runner: sender: {type(exc).__name__}: {exc}; retrying", file=sys.stderr,
          flush=True)


def payload(channel: Channel, action: str, alert: dict[str, Any]) -> dict[str, Any]:
    """The JSON a channel receives for one alert event."""
    # An alert about the runner itself (runner_degraded) has no DAG.
    component = alert["dag_id"] or "runner"
    where = component + (f" / {alert['run_id']}" if alert["run_id"] else "") + (
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
                "component": component, "group": component, "class": alert["kind"],
                "custom_details": {k: alert[k] for k in ("id", "dag_id", "run_id", "task_id",
                                                         "level", "summary")},
            }
        return body
    return {"event": action, "alert": alert}
