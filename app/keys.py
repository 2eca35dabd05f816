"""Keys in the order they were typed, each going where the one before it left focus.

Textual forwards a key to the widget focused when the key is read and runs a screen's bindings
only once the key has bubbled up to the app, so keys read in one burst (a fast typist, a slow SSH
link, a paste) were all sent to the widget focused before the first of them was handled: `/gate⏎`
opened the filter and lost `gate⏎` to the table behind it, `c y` answered nothing. `KeyOrder`
holds each key until the one before it has gone as far as it goes."""
from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from textual import events
from textual.message import Message

CHECK_SECONDS = 0.25  # how often a key still in flight is checked for a widget that went away


class KeyDone(Message):
    """Posted behind a key to the widget it went to; the app receives it once that key has been
    handled everywhere it goes (each message queue keeps its order, so it arrives after)."""


class KeyOrder:
    def __init__(self, app: Any, dispatch: Callable[[events.Key], Awaitable[None]]) -> None:
        self.app = app
        self.dispatch = dispatch  # Textual's own handling of a key read from the terminal
        self.held: deque[events.Key] = deque()
        self.in_flight = False
        self._target: Any = None
        self._timer: Any = None

    async def key(self, event: events.Key) -> None:
        """A key read from the terminal: dispatched now, or held behind the one in flight."""
        if self.in_flight:
            self.held.append(event)
            return
        self.in_flight = True
        await self.dispatch(event)
        self._target = self.app.focused or self.app.screen
        self._target.post_message(KeyDone())
        self._timer = self.app.set_interval(CHECK_SECONDS, self._check)

    async def _check(self) -> None:
        """A key sent to a widget removed before it handled it never reports back: however
        slow the machine, only that releases the keys behind it without a KeyDone."""
        target = self._target
        if target is not None and not (target.is_attached and target.is_running):
            await self.done()

    async def done(self) -> None:
        """The key in flight has been handled: the next held one goes."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self.in_flight = False
        self._target = None
        if self.held:
            await self.key(self.held.popleft())
