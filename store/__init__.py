"""flowtui's store (SQLite, or PostgreSQL for several hosts): schema, states, and every read
and write of recorded state."""
from __future__ import annotations

from flowtui.store.db import Store, current_user, host_name
from flowtui.store.health import StoreError
from flowtui.store.states import (
    ACTIVE, RUN_TERMINAL, TERMINAL, WAITING, RunState, TaskState, TransitionError,
    check_transition,
)

__all__ = [
    "ACTIVE", "RUN_TERMINAL", "TERMINAL", "WAITING", "RunState", "Store", "StoreError",
    "TaskState", "TransitionError", "check_transition", "current_user", "host_name",
]
