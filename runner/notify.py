"""The sender: delivers queued notifications, each channel on its own, every attempt under one
total deadline (connect to last byte), with retries and exponential backoff, recording every
attempt. Secrets are read from the environment at the moment of sending and never written."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from flowtui.runner.alerting import PAGERDUTY_URL, AlertConfig, Channel
from flowtui.runner.clock import SYSTEM, Clock
from flowtui.store import Store, host_name
from flowtui.store.alerts import Alert

TIMEOUT = 10.0  # the whole attempt, not one read: a server dripping bytes cannot stretch it
MAX_ATTEMPTS = 5
BACKOFF = 1.0
BODY_LIMIT = 64 * 1024  # the status is what counts; a huge answer is not kept in memory

_ALERT_KEYS = ("id", "kind", "dag_id", "run_id", "task_id", "state", "severity", "level",
               "summary", "created_at")  # what a webhook is told about the alert


HOLD = 30.0  # seconds past the send timeout before another sender may try a taken delivery
LOOK_AGAIN = 30.0  # how often a page left to another host's sender is looked at again


class Sender(threading.Thread):
    """One thread running an asyncio loop: a task per channel that has due deliveries, so a
    stuck endpoint holds only its own channel's queue. Between sends it sleeps until the
    earliest retry comes due on ``clock`` or ``wake`` is called, never polling; a clock moved
    by hand (a test's) is followed by a ``wake``."""

    def __init__(self, db_path: "str | Path", config: AlertConfig, *, timeout: float = TIMEOUT,
                 backoff: float = BACKOFF, clock: Clock = SYSTEM) -> None:
        super().__init__(name="flowtui-sender", daemon=True)
        self.db_path = db_path
        self.config = config
        self.timeout = timeout
        self.backoff = backoff
        self.clock = clock
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
        store = Store.open(self.db_path, now=self.clock.now)
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
        now = self.clock.now()
        elsewhere: set[str] | None = None
        left: list[str] = []
        for name in store.alerts.due_channels(now):
            if name in workers:
                continue
            if name not in self.config.channels:
                if elsewhere is None:
                    elsewhere = store.served_channels(now)
                if name in elsewhere:
                    # Another host's runner names this channel (several hosts, each with its
                    # own flowtui.toml): its sender sends it. Closed here as not configured
                    # only once no live runner names it.
                    left.append(name)
                    continue
            task = asyncio.create_task(self._deliver_channel(store, client, name))
            task.add_done_callback(lambda _: self._wake.set() if self._wake else None)
            workers[name] = task
        next_at = store.alerts.next_attempt_at(except_channels=[*workers, *left])
        wait = None if next_at is None else max(0.0, next_at - now)
        return wait if not left else min(wait if wait is not None else LOOK_AGAIN, LOOK_AGAIN)

    async def _deliver_channel(self, store: Store, client: Any, name: str) -> None:
        """Deliver this channel's due deliveries one at a time, oldest first, until none is due."""
        try:
            while not self.stopping:
                channel = self.config.channels.get(name)
                limit = (channel.timeout if channel is not None else None) or self.timeout
                now = self.clock.now()  # held while this sender tries it (several hosts)
                due = store.alerts.next_due(name, now, hold_until=now + HOLD + limit)
                if due is None:
                    return
                alert = alert_fields(due.alert)
                if channel is None:
                    ok, detail = False, f"channel {name!r} is not configured"
                else:
                    ok, detail = await self.attempt(client, channel, due.action, alert)
                self._record(store, due.id, due.attempts + 1, ok, detail, final=channel is None)
        except Exception as exc:  # the store was busy, a bug: the next pass tries again
            _report(exc)
            await asyncio.sleep(self.backoff)

    def _record(self, store: Store, delivery_id: int, attempts: int, ok: bool, detail: str,
                *, final: bool) -> None:
        done = ok or final or attempts >= MAX_ATTEMPTS
        now = self.clock.now()
        store.alerts.record_attempt(
            delivery_id, ok=ok, detail=detail, attempts=attempts,
            status="sent" if ok else ("failed" if done else "pending"),
            next_attempt_at=now + self.backoff * (2 ** (attempts - 1)), now=now)

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


def alert_fields(alert: Alert) -> dict[str, Any]:
    """The alert as a channel's payload carries it."""
    return {key: getattr(alert, key) for key in _ALERT_KEYS}


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
                "source": host_name(), "severity": alert["severity"],
                "component": component, "group": component, "class": alert["kind"],
                "custom_details": {k: alert[k] for k in ("id", "dag_id", "run_id", "task_id",
                                                         "level", "summary")},
            }
        return body
    return {"event": action, "alert": alert}
