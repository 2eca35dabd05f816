"""Read-only queries the TUI and the CLI show: each returns dataclasses."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowtui.store.db import Store


class Views:
    def __init__(self, store: Store) -> None:
        self.store = store
