"""Alerts, their deliveries and delivery attempts: every read and write of them."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowtui.store.db import Store


class AlertRecords:
    def __init__(self, store: Store) -> None:
        self.store = store
