"""Task logs read for the log viewer by byte offset, in bounded memory: tail, window, search."""
from __future__ import annotations

import bisect
import os
import threading
from collections import deque
from dataclasses import dataclass
from typing import BinaryIO, Iterable

TAIL_BYTES = 512 * 1024    # what is shown on opening: the end of the file
WINDOW_BYTES = 256 * 1024  # around a jump target
VIEW_LINES = 10_000        # lines the viewer keeps (its scrollback while following)
OPEN_LINES = 500           # lines painted on opening and around a jump: ~0.1 ms each to paint;
                           # scrolling past either edge loads the next lines by byte offset
BATCH_LINES = 500          # the most lines one repaint adds: the widget costs ~40 µs a line
LINE_LIMIT = 4096          # bytes of one line that are shown; the rest is summarised
READ_BYTES = 4 << 20       # the most one poll reads; more unread and it jumps ahead to the end
JUMP_BYTES = 1 << 20       # how much of the end it reads after such a jump
SEARCH_BYTES = 1 << 20      # one read of a search through the file
EARLIER = "[… earlier output not loaded: Home or g for the start of the log, e for the error …]"

Line = tuple[int | None, str]  # a line's byte offset in the file (None: a note) and its text


def size_text(count: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}".replace(".0 ", " ")
    return f"{count} bytes"


def clip(raw: bytes, length: int | None = None) -> str:
    """One line as text, cut at ``LINE_LIMIT`` bytes with a marker saying how long it is."""
    length = len(raw) if length is None else length
    if length <= LINE_LIMIT:
        return raw.decode("utf-8", "replace")
    head = raw[:LINE_LIMIT].decode("utf-8", "ignore")
    return f"{head} … [line continues, {size_text(length)}]"


def _last_lines(data: bytes, keep: int) -> tuple[list[bytes], int]:
    """The last ``keep`` newline-separated pieces of ``data`` and how many came before them,
    without making an object for each piece left out."""
    cut = len(data)
    for _ in range(keep - 1):
        cut = data.rfind(b"\n", 0, cut)
        if cut < 0:
            return data.split(b"\n"), 0
    cut = data.rfind(b"\n", 0, cut)
    if cut < 0:
        return data.split(b"\n"), 0
    return data[cut + 1:].split(b"\n"), data.count(b"\n", 0, cut) + 1


def _with_offsets(base: int, parts: Iterable[bytes]) -> list[Line]:
    """Lines as (offset, text), the first starting at byte ``base``, one newline between each."""
    lines: list[Line] = []
    for part in parts:
        lines.append((base, clip(part)))
        base += len(part) + 1
    return lines


def _tail_of(fh: BinaryIO, end: int, size: int, keep: int) -> tuple[list[Line], bool]:
    start = max(0, end - size)
    fh.seek(start)
    data = fh.read(end - start)
    parts, dropped = _last_lines(data, keep + 2)
    base = start + len(data) - (sum(map(len, parts)) + len(parts) - 1)
    partial: Line | None = None
    if start > 0 and not dropped:
        # The first one is a partial line. When it is all there is (one line longer than the
        # window), say so rather than show an empty log.
        if not any(parts[1:]):
            partial = (base, f"[… line continues from earlier in the file, "
                             f"{size_text(len(parts[0]))} of it here]")
        base += len(parts[0]) + 1
        parts = parts[1:]
    if parts and parts[-1] == b"":
        parts.pop()
    cut = start > 0 or dropped > 0 or len(parts) > keep
    lines = _with_offsets(base, parts)
    if partial is not None:
        lines.insert(0, partial)
    return lines[-keep:], cut


def read_tail(path: str, size: int = TAIL_BYTES,
              keep: int = OPEN_LINES) -> tuple[list[str], int, bool]:
    """The last lines of a file (at most ``size`` bytes, ``keep`` lines), the file's size, and
    whether earlier output was left out; never reads the whole file."""
    try:
        with open(path, "rb") as fh:
            end = fh.seek(0, os.SEEK_END)
            lines, cut = _tail_of(fh, end, size, keep)
    except OSError:
        return [], 0, False
    return [text for _, text in lines], end, cut


@dataclass(frozen=True, slots=True)
class Window:
    """Whole lines of a file around a byte offset."""

    lines: list[Line]
    target: int  # index of the line that holds the byte asked for
    end: int     # the byte just after the last line
    size: int    # the file's size when it was read


def read_window(path: str, at: int, before: int = OPEN_LINES // 2,
                span: int = WINDOW_BYTES) -> Window:
    """At most ``OPEN_LINES`` lines around byte ``at``, ``before`` of them ahead of its line.

    Reads ``span`` bytes around ``at`` whatever the file's size, so any place in a 1 GB log
    loads as fast as its end."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            at = max(0, min(at, size - 1))
            start = max(0, at - span // 2)
            fh.seek(start)
            data = fh.read(span)
    except OSError:
        return Window([], 0, 0, 0)
    low, high = 0, len(data)
    if start > 0:  # a partial first line is dropped, unless it holds the target
        cut = data.find(b"\n")
        low = cut + 1 if 0 <= cut < at - start else 0
    if start + len(data) < size:  # and so is a partial last line
        cut = data.rfind(b"\n")
        high = cut + 1 if cut >= at - start else len(data)
    body = data[low:high]
    if body.endswith(b"\n"):
        body = body[:-1]
    lines = _with_offsets(start + low, body.split(b"\n")) if body else []
    if not lines:
        return Window([], 0, start + high, size)
    target = max(0, bisect.bisect_right([o for o, _ in lines], at) - 1)
    first = max(0, min(target - before, len(lines) - OPEN_LINES))
    shown = lines[first:first + OPEN_LINES]
    last_offset, last_text = shown[-1]
    end = min(size, start + high, (last_offset or 0) + len(last_text.encode()) + 1)
    if first + len(shown) < len(lines):
        end = lines[first + len(shown)][0] or end
    return Window(shown, target - first, end, size)


def line_start(path: str, at: int) -> int:
    """The offset of the start of the line that holds byte ``at``."""
    with open(path, "rb") as fh:
        position = at
        while position > 0:
            low = max(0, position - SEARCH_BYTES)
            fh.seek(low)
            cut = fh.read(position - low).rfind(b"\n")
            if cut >= 0:
                return low + cut + 1
            position = low
    return 0


def line_end(path: str, at: int) -> int:
    """The offset just after the line that holds byte ``at`` (the next line's start)."""
    with open(path, "rb") as fh:
        fh.seek(at)
        position = at
        while data := fh.read(SEARCH_BYTES):
            cut = data.find(b"\n")
            if cut >= 0:
                return position + cut + 1
            position += len(data)
    return position


def search(path: str, text: str, origin: int, forward: bool = True) -> tuple[int, bool] | None:
    """The start of the next line with ``text`` in it (any case), reading the whole file by byte
    offset: forward from ``origin`` (a match starting there counts), or backward (matches that
    start before ``origin``); past the end it wraps around. Returns the line's offset and
    whether it wrapped, or None when the file has no match."""
    needle = text.encode("utf-8", "replace").lower()
    if not needle:
        return None
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            origin = max(0, min(origin, size))
            spans = [(origin, size), (0, origin)] if forward else [(0, origin), (origin, size)]
            for wrapped, (low, high) in enumerate(spans):
                found = (_scan_forward if forward else _scan_backward)(fh, needle, low, high, size)
                if found is not None:
                    return line_start(path, found), bool(wrapped)
    except OSError:
        return None
    return None


def _scan_forward(fh: BinaryIO, needle: bytes, low: int, high: int, size: int) -> int | None:
    """The first match that starts in [low, high)."""
    overlap = len(needle) - 1
    position = low
    while position < high:
        fh.seek(position)
        data = fh.read(min(SEARCH_BYTES + overlap, size - position)).lower()
        hit = data.find(needle)
        if hit >= 0 and position + hit < high:
            return position + hit
        if hit >= 0 or not data:
            return None
        position += SEARCH_BYTES
    return None


def _scan_backward(fh: BinaryIO, needle: bytes, low: int, high: int, size: int) -> int | None:
    """The last match that starts in [low, high)."""
    overlap = len(needle) - 1
    position = high
    while position > low:
        start = max(low, position - SEARCH_BYTES)
        fh.seek(start)
        data = fh.read(min(size, position + overlap) - start).lower()
        hit = data.rfind(needle)
        if hit >= 0:
            return start + hit
        position = start
    return None


class LogTail:
    """A log followed by byte offset. A worker thread calls ``poll``; the screen calls ``take``.

    Only what was appended since the last poll is read, at most ``READ_BYTES`` of it: a writer
    faster than that is skipped ahead (and the skip reported), a line longer than
    ``LINE_LIMIT`` is kept as its head while the reader scans on for its end, and at most
    ``keep`` unread lines wait for the screen. So memory and work per poll stay bounded.
    """

    def __init__(self, path: str, keep: int = BATCH_LINES) -> None:
        self.path = path
        self.keep = keep
        self.size = 0
        self.closed = threading.Event()
        self._scan: int | None = None   # the next byte to read; None until the tail is read
        self._in_line = False           # the bytes at _scan continue a line already started
        self._head: bytes | None = None  # that line's first LINE_LIMIT bytes (None: not shown)
        self._line_start = 0
        self._lock = threading.Lock()
        self._lines: deque[Line] = deque()
        self._limit = OPEN_LINES + 1  # the opening screenful is larger than a repaint's batch
        self._dropped = 0
        self._skipped = 0

    def close(self) -> None:
        self.closed.set()

    @property
    def opened(self) -> bool:
        """The end of the log was read (what follows is new output)."""
        return self._scan is not None

    # -- worker thread ---------------------------------------------------------------------
    def poll(self) -> bool:
        """Read what is new; True when there are lines for the screen."""
        try:
            with open(self.path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                self.size = size
                if self._scan is None:
                    lines, cut = _tail_of(fh, size, TAIL_BYTES, OPEN_LINES)
                    self._scan = size
                    return self._push(([(None, EARLIER)] if cut else []) + lines, 0)
                if size < self._scan:  # truncated or replaced: start again from its beginning
                    self._scan, self._in_line, self._head = 0, False, None
                if size - self._scan > READ_BYTES:
                    start = size - JUMP_BYTES
                    self._skip(start - self._scan)
                    self._scan, self._in_line, self._head = start, True, None
                fh.seek(self._scan)
                data = fh.read(size - self._scan)
        except OSError:
            return False
        return self._parse(data)

    def _parse(self, data: bytes) -> bool:
        assert self._scan is not None
        first: list[Line] = []
        pos = 0
        if self._in_line:
            newline = data.find(b"\n")
            if newline < 0:
                self._scan += len(data)
                return False
            if self._head is not None:
                first.append((self._line_start,
                              clip(self._head, self._scan + newline - self._line_start)))
            self._in_line, self._head = False, None
            pos = newline + 1
        parts, dropped = _last_lines(data[pos:], self.keep + 1)
        rest = parts.pop()  # after the last newline: a line not finished yet
        if dropped:
            dropped, first = dropped + len(first), []
        end = self._scan + len(data)
        base = end - len(rest) - sum(len(p) + 1 for p in parts)
        lines = first + _with_offsets(base, parts)
        if len(rest) > LINE_LIMIT:  # keep its head only and scan on for its end
            self._in_line, self._head, self._line_start = True, rest[:LINE_LIMIT], end - len(rest)
            self._scan = end
        else:
            self._scan = end - len(rest)  # read the unfinished line again once it ends
        return self._push(lines, dropped)

    def _skip(self, count: int) -> None:
        with self._lock:
            self._dropped += len(self._lines)
            self._lines.clear()
            self._skipped += count

    def _push(self, lines: list[Line], dropped: int) -> bool:
        with self._lock:
            self._lines.extend(lines)
            for _ in range(len(self._lines) - self._limit):
                self._lines.popleft()  # the oldest unread lines give way to the newest
                dropped += 1
            self._dropped += dropped
            return bool(self._lines)

    # -- main thread -----------------------------------------------------------------------
    def take(self) -> list[str]:
        """The lines read since the last call, after a line saying what was left out, if any."""
        return [text for _, text in self.take_lines()]

    def take_lines(self) -> list[Line]:
        """``take`` with each line's byte offset (None for a note)."""
        with self._lock:
            if not self._lines:
                return []
            lines = list(self._lines)
            self._lines.clear()
            self._limit = self.keep
            dropped, skipped = self._dropped, self._skipped
            self._dropped = self._skipped = 0
        if dropped or skipped:
            parts = [f"{dropped:,} lines"] if dropped else []
            parts += [size_text(skipped)] if skipped else []
            lines.insert(0, (None, f"[… {' and '.join(parts)} not shown: written faster than "
                                   f"a screen can follow …]"))
        return lines
