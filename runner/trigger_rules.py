"""Trigger-rule evaluation with Airflow's ``TriggerRuleDep`` semantics (direct upstreams only)."""
from __future__ import annotations

from dataclasses import dataclass

RUN = "run"
WAIT = "wait"
UPSTREAM_FAILED = "upstream_failed"
SKIPPED = "skipped"


@dataclass(slots=True)
class Counts:
    """Upstream tally: how many direct upstreams ended in each terminal state."""

    upstream: int
    success: int = 0
    failed: int = 0
    skipped: int = 0
    upstream_failed: int = 0

    def add(self, state: str) -> None:
        """Count one upstream that reached a terminal state."""
        if state == "success":
            self.success += 1
        elif state == "failed":
            self.failed += 1
        elif state == "skipped":
            self.skipped += 1
        else:
            self.upstream_failed += 1

    @property
    def done(self) -> int:
        return self.success + self.failed + self.skipped + self.upstream_failed

    def describe(self) -> str:
        return (f"{self.success} success, {self.failed} failed, {self.upstream_failed} "
                f"upstream_failed, {self.skipped} skipped of {self.upstream}")


def evaluate(rule: str, c: Counts) -> str:
    """``run``, ``wait``, or the state the task ends in without running."""
    if c.upstream == 0 or rule == "always":
        return RUN
    done = c.done >= c.upstream
    failed_any = c.failed or c.upstream_failed
    if rule == "all_success":
        if failed_any:
            return UPSTREAM_FAILED
        if c.skipped:
            return SKIPPED
        return RUN if c.success == c.upstream else WAIT
    if rule == "all_failed":
        if c.success or c.skipped:
            return SKIPPED
        return RUN if c.failed + c.upstream_failed == c.upstream else WAIT
    if rule == "all_done":
        return RUN if done else WAIT
    if rule == "all_skipped":
        if c.success or c.failed or c.upstream_failed:
            return SKIPPED
        return RUN if c.skipped == c.upstream else WAIT
    if rule == "one_success":
        if c.success:
            return RUN
        if done:
            return SKIPPED if c.done == c.skipped else UPSTREAM_FAILED
        return WAIT
    if rule == "one_failed":
        if failed_any:
            return RUN
        return SKIPPED if done else WAIT
    if rule == "one_done":
        if c.success or c.failed:
            return RUN
        return SKIPPED if done else WAIT
    if rule == "none_failed":
        if failed_any:
            return UPSTREAM_FAILED
        return RUN if done else WAIT
    if rule == "none_failed_min_one_success":
        if failed_any:
            return UPSTREAM_FAILED
        if c.skipped == c.upstream:
            return SKIPPED
        return RUN if done else WAIT
    if rule == "none_skipped":
        if c.skipped:
            return SKIPPED
        return RUN if done else WAIT
    if rule == "all_done_min_one_success":
        # Skipped upstreams are not "done" for this rule: one skipped upstream skips the task.
        if c.skipped:
            return SKIPPED
        if not done:
            return WAIT
        return RUN if c.success else UPSTREAM_FAILED
    raise ValueError(f"unknown trigger rule {rule!r}")


def waiting_reason(rule: str, c: Counts, pending: list[str]) -> str:
    """The one-line reason a task whose rule is not yet decided is waiting."""
    names = ", ".join(pending[:3]) + (f" and {len(pending) - 3} more" if len(pending) > 3 else "")
    if rule == "all_success":
        return f"waiting for upstream {names}"
    return f"trigger rule {rule} not met yet ({c.describe()}); waiting for {names}"
