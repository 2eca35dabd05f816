"""How a try's end is read: the state it leads to, its reason, and the wait before a retry."""
from __future__ import annotations

import random
import signal

from flowtui.runner.model import TaskSpec
from flowtui.store import TaskState

S = TaskState
SENSOR_TIMED_OUT = 124  # exit codes of flowtui.runner.sensor
SENSOR_RESCHEDULE = 125
RUNNER_STOPPED = "runner stopped"  # a try cut short by its claimer's stop (SPEC 10)
CLAIM_LOST = "claim lost"  # a try claimed by a runner that lost track of it unstarted
UNCOUNTED = frozenset({RUNNER_STOPPED, CLAIM_LOST})  # tried again at once, using no retry
MAX_RETRY_DELAY = 24 * 3600.0  # no retry waits longer than a day, whatever the backoff says
# The cause an event records for a try ended by a kill of this reason (else "operator").
CAUSES = {"timeout": "timeout", "hung": "hung", "zombie": "zombie", "signal": "signal",
          "dagrun_timeout": "timeout", "host lost": "host_lost"}


def outcome(spec: TaskSpec, code: int | None,
            kill_reason: str | None) -> tuple[TaskState, str, bool]:
    """The state a try's end leads to (before retries), its reason, and if it may retry."""
    if kill_reason == "timeout":
        return S.FAILED, f"execution_timeout of {spec.execution_timeout:g}s exceeded", True
    if kill_reason == "hung":
        return (S.FAILED, f"hung: no output and no heartbeat for "
                          f"{spec.heartbeat_timeout:g}s", True)
    if kill_reason == "zombie":
        return (S.FAILED, "zombie: the process ended while no runner watched it and left "
                          "no exit status", True)
    if kill_reason == "host lost":
        return (S.FAILED, "host lost: the runner that ran it stopped renewing its lease", True)
    if kill_reason == "dagrun_timeout":
        return S.FAILED, "dagrun_timeout exceeded", False
    if kill_reason == RUNNER_STOPPED:
        return (S.FAILED, "the runner running it stopped before it ended; it runs again", True)
    if kill_reason == CLAIM_LOST:
        return (S.FAILED, "the runner that claimed it lost track of it before starting it; it "
                          "runs again", True)
    if kill_reason == "signal":
        return S.FAILED, "killed: the runner was asked to stop", False
    if kill_reason:
        return S.FAILED, kill_reason, True
    if spec.sensor is not None and code is not None:
        if code == SENSOR_RESCHEDULE:
            return S.UP_FOR_RESCHEDULE, "", False
        if code == SENSOR_TIMED_OUT:
            timeout = f"{spec.timeout:g}s" if spec.timeout else "its timeout"
            if spec.soft_fail:
                return S.SKIPPED, f"sensor timed out after {timeout} (soft_fail)", False
            return S.FAILED, f"sensor timed out after {timeout}", False
    if code is None:
        return S.FAILED, "exit code unknown", True
    if code < 0:
        return S.FAILED, f"killed by signal {_signal_name(-code)}", \
            spec.retry_on_exit_codes is None
    if code == 0:
        return S.SUCCESS, "", False
    if spec.skip_exit_code is not None and code == spec.skip_exit_code:
        return S.SKIPPED, f"exited {code} (skip_exit_code)", False
    codes = spec.retry_on_exit_codes
    return S.FAILED, f"exited {code}", codes is None or code in codes


def retry_delay(spec: TaskSpec, try_number: int) -> float:
    delay = float(spec.retry_delay)
    if spec.retry_exponential_backoff:
        # Past 2**40 the cap below holds whatever the base delay: no overflow on try 2000.
        delay = delay * (2.0 ** min(try_number - 1, 40))
    if spec.max_retry_delay is not None:
        delay = min(delay, spec.max_retry_delay)
    delay = min(delay, MAX_RETRY_DELAY)
    if spec.retry_jitter:
        delay *= 1 + random.uniform(-spec.retry_jitter, spec.retry_jitter)
    return max(0.0, min(delay, MAX_RETRY_DELAY))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
