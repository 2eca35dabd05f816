"""Whether the database takes writes: the store's errors, what keeps a write out (a lock held
by another process, a full or failing disk), and the backoff while it lasts."""
from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass, field


class StoreError(Exception):
    """The database cannot be used; the message says why and what to do."""


class StoreUnavailable(StoreError):
    """The database cannot take writes for now (another process's lock, a full disk); what was
    to be written is still queued and is retried."""


def outage(exc: BaseException) -> str | None:
    """What keeps the database from taking writes, in words, when ``exc`` is such a condition
    (a lock held by another process, a full disk, a failing disk); None for anything else."""
    if isinstance(exc, StoreUnavailable):
        return str(exc)
    if not isinstance(exc, sqlite3.OperationalError):
        return None
    text = str(exc)
    lowered = text.lower()
    if "locked" in lowered or "busy" in lowered:
        return f"the database is locked by another process ({text})"
    if "full" in lowered:
        return f"the disk holding the database is full ({text})"
    if "disk i/o" in lowered:
        return f"the disk holding the database failed a write ({text})"
    if "database unavailable" in lowered:  # PostgreSQL: the server restarts, the network drops
        return f"the database server does not answer ({text})"
    return None


@dataclass(slots=True)
class WriteHealth:
    """Whether writes reach the database, and when to try again while they do not.

    The first failure starts an outage; each retry that fails doubles the wait up to
    ``max_backoff``; the first write that goes through ends it. ``on_recovered(error, since,
    until)`` is told when an outage ends; ``redo`` holds work to run again once writes go
    through (a hook that failed for the outage)."""
    backoff: float = 0.5
    max_backoff: float = 30.0
    error: str = ""
    since: float | None = None
    retry_at: float = 0.0
    delay: float = 0.0
    on_recovered: Callable[[str, float, float], None] | None = None
    redo: list[Callable[[float], None]] = field(default_factory=list)

    def failed(self, message: str, now: float) -> str | None:
        """Record a failed write; a line to print when the problem is new, else None (a
        retry that fails the same way says nothing)."""
        changed = message != self.error
        self.delay = self.backoff if self.since is None else min(self.delay * 2, self.max_backoff)
        if self.since is None:
            self.since = now
        self.error = message
        self.retry_at = now + self.delay
        if not changed:
            return None
        return f"cannot write to the database: {message}; retrying with backoff"

    def succeeded(self) -> tuple[str, float] | None:
        """Record a write that went through; the (error, since) of the outage it ended."""
        if self.since is None:
            return None
        ended = (self.error, self.since)
        self.error, self.since, self.delay, self.retry_at = "", None, 0.0, 0.0
        return ended

    @staticmethod
    def report(line: str) -> None:
        """A line on stderr, which may sit on the very disk that is full: never raises."""
        try:
            print(f"flowtui runner: {line}", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass

    def waiting(self, now: float) -> bool:
        """True while backing off: a write now would only fail again."""
        return self.since is not None and now < self.retry_at
