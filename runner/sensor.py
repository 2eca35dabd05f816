"""Entry point of a sensor task's process: poke until the condition holds or time runs out.

Exit 0: met. Exit 124: timed out (counted from the first poke, across retries). Exit 125: not
met in ``reschedule`` mode (the runner frees the slot and starts a new poke later).
"""
from __future__ import annotations

import glob
import json
import os
import sqlite3
import subprocess
import sys
import time

from flowtui.runner.clock import SYSTEM
from flowtui.store import Store, StoreError

TIMED_OUT = 124
RESCHEDULE = 125


def poke(kind: str, arg: str, env: dict[str, str], interval: float) -> tuple[bool, str]:
    if kind == "file":
        found = glob.glob(arg)
        return bool(found), f"{len(found)} match(es) for {arg}"
    if kind == "command":
        result = subprocess.run(["/bin/sh", "-c", arg], stdin=subprocess.DEVNULL)
        return result.returncode == 0, f"command exited {result.returncode}"
    if kind == "http":
        import httpx

        try:
            response = httpx.get(arg, timeout=max(1.0, min(interval, 30.0)))
        except httpx.HTTPError as exc:
            return False, f"GET {arg}: {type(exc).__name__}"
        return 200 <= response.status_code < 300, f"GET {arg}: {response.status_code}"
    if kind == "task":
        dag_id, task_id = arg.split(".", 1)
        from flowtui.runner.config import load_config

        db = load_config(env["FLOWTUI_HOME"]).database  # the runner's store, SQLite or not
        logical = float(env["FLOWTUI_LOGICAL_TS"])
        try:
            store = Store.open(db, readonly=True, busy_timeout=10)
            try:
                found = store.task_state_on(dag_id, task_id, logical)
            finally:
                store.close()
        except (sqlite3.Error, StoreError) as exc:
            return False, f"cannot read the store: {exc}"
        state = found.value if found else "no run for this logical date"
        return state == "success", f"{arg}: {state}"
    return False, f"unknown sensor {kind}"


def main() -> int:
    env = dict(os.environ)
    kind, arg = next(iter(json.loads(env["FLOWTUI_SENSOR"]).items()))
    interval = float(env.get("FLOWTUI_POKE_INTERVAL") or 60)
    timeout = float(env["FLOWTUI_SENSOR_TIMEOUT"]) if env.get("FLOWTUI_SENSOR_TIMEOUT") else None
    first = float(env.get("FLOWTUI_FIRST_POKE_AT") or SYSTEM.now())
    reschedule = env.get("FLOWTUI_SENSOR_MODE") == "reschedule"
    number = 0
    while True:
        number += 1
        met, detail = poke(kind, arg, env, interval)
        stamp = time.strftime("%H:%M:%S")
        print(f"{stamp} poke {number}: {'met' if met else 'not met'} ({detail})", flush=True)
        if met:
            return 0
        elapsed = SYSTEM.now() - first
        if timeout is not None and elapsed >= timeout:
            print(f"sensor timed out after {elapsed:.1f}s (timeout {timeout:g}s)", flush=True)
            return TIMED_OUT
        if reschedule:
            return RESCHEDULE
        wait = interval if timeout is None else max(0.0, min(interval, timeout - elapsed))
        SYSTEM.sleep(wait)


if __name__ == "__main__":
    sys.exit(main())
