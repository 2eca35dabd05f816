"""The error excerpt of a task's log: the line a human would point at, found from the end.

In order of preference: the exception line of the last Python traceback; else the last line at
level ERROR, FATAL or CRITICAL; else the last line that reads as a failure. A word inside a
``key=value`` setting or a zero count (``on_error=abort``, ``errors=0``, ``0 failed``) is not a
failure. The file is read backwards by byte offset from its end, over a bounded window, so the
cost is the same for a 1 GB log as for a small one.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

WINDOW = 4 * 1024 * 1024  # how far back from the end an excerpt is looked for
_CHUNK = 64 * 1024

_TRACEBACK = b"Traceback (most recent call last):"
_LEVEL = re.compile(
    rb"(?:^|[ \t\[(|:<\"'])(?:ERROR|FATAL|CRITICAL|Error|Fatal|Critical)(?:$|[ \t\]):|>\"',])"
    rb"|(?i:\blevel[\"']?[ \t]*[=:][ \t]*[\"']?(?:error|fatal|critical)\b)", re.M)
# Settings, zero counts and the output protocol: blanked before looking for error words, so
# "on_error=abort", "errors=0", "0 failed" never read as failures. Never spans a line break.
_SETTING = re.compile(rb"(?<![\w.\-])[\w.\-]+(?:=[^\s,;]*|[ \t]*:[ \t]*0\b(?![ \t]+[A-Za-z]))"
                      rb"|\b0[ \t]+\w+"
                      rb"|^::flowtui [^\n]*", re.M)
_FAILURE = re.compile(
    rb"Error\b|\b(?:[Ee]rror:?|ERR!?|[Ff]ail(?:ed|ure|s)?|FAIL(?:ED|URE)?|[Rr]efused|[Dd]enied"
    rb"|[Nn]ot found|No such file|Killed|KILLED|[Tt]imed out|[Tt]imeout|[Pp]anic(?:ked)?"
    rb"|Segmentation fault|[Ee]xit(?:ed)?[ \t]+(?:with[ \t]+)?(?:code|status)?[ \t]*[1-9]\d*"
    rb"|[Nn]on-zero exit|[Cc]ould not|[Cc]annot|[Uu]nable to)\b")
_KEYWORDS = (b"error", b"fatal", b"critical", b"err!", b"fail", b"refused", b"denied",
             b"not found", b"no such file", b"killed", b"timed out", b"timeout", b"panic",
             b"segmentation fault", b"exit", b"non-zero", b"could not", b"cannot", b"unable to")
_LEVEL_WORDS = (b"error", b"fatal", b"critical")
_CHECKS = 10_000  # lines looked at, at most: the bound on a log made of decoys
_LATER = 256 * 1024  # text kept after a block, to find a traceback's exception line


@dataclass(frozen=True, slots=True)
class Excerpt:
    text: str
    offset: int  # byte offset of the line's start in the file
    kind: str  # "exception", "level" or "failure"


def find_excerpt(path: str | os.PathLike[str], window: int = WINDOW) -> Excerpt | None:
    """The error excerpt of the log at ``path``, or None when no line reads as an error.

    Literal searches (in C) find the lines worth a look, from the end back; only those lines are
    checked in Python, and at most ``_CHECKS`` of them, so a log full of decoys costs no more
    than ``window`` bytes of searching.
    """
    blocks = list(_blocks_backwards(path, window))
    later = b""
    for start, block in blocks:
        header = block.rfind(_TRACEBACK)
        if header >= 0:
            found = _exception_line(block, header, later)
            if found is not None:
                return Excerpt(_text(found[1]), start + found[0], "exception")
        later = (block + b"\n" + later)[:_LATER]
    failure: Excerpt | None = None
    checks = 0
    for start, block in blocks:
        lower = block.lower()
        keywords = _LEVEL_WORDS if failure is not None else _KEYWORDS
        last = {word: lower.rfind(word) for word in keywords}
        end = len(block)
        while checks < _CHECKS:
            position = max(last.values())
            if position < 0:
                break
            begin = block.rfind(b"\n", 0, position) + 1
            stop = block.find(b"\n", position)
            line = block[begin:stop if stop >= 0 else len(block)]
            checks += 1
            if _is_level(line):
                return Excerpt(_text(line), start + begin, "level")
            if failure is None and _is_failure(line):
                failure = Excerpt(_text(line), start + begin, "failure")
                last = {word: last[word] for word in _LEVEL_WORDS}
            end = begin
            for word, at in last.items():
                if at >= end:
                    last[word] = lower.rfind(word, 0, end)
    return failure


def tail(path: str | os.PathLike[str], count: int, window: int = 1024 * 1024) -> list[str]:
    """The last ``count`` lines of a file (read backwards from its end)."""
    lines: list[str] = []
    for _, line in _lines_backwards(path, window):
        lines.append(_text(line))
        if len(lines) >= count:
            break
    lines.reverse()
    return lines


def _exception_line(block: bytes, header: int, later: bytes) -> tuple[int, bytes] | None:
    """The first unindented line after a traceback's frames (``ValueError: bad row``), as its
    offset within ``block`` and its text."""
    text = block + b"\n" + later
    position = text.find(b"\n", header)
    while 0 <= position < len(text) - 1:
        begin = position + 1
        position = text.find(b"\n", begin)
        line = text[begin:position if position >= 0 else len(text)]
        if line.strip() and not line[:1].isspace() and not line.startswith(b"Traceback") \
                and not line.startswith(b"During handling") \
                and not line.startswith(b"The above exception"):
            return begin, line
        if position < 0:
            break
    return None


def _is_level(line: bytes) -> bool:
    # "ERROR=0", "errors: 0" and the like are settings, not a level.
    return bool(_LEVEL.search(line)) and bool(_LEVEL.search(_SETTING.sub(b" ", line)))


def _is_failure(line: bytes) -> bool:
    return bool(_FAILURE.search(_SETTING.sub(b" ", line)))


def _text(line: bytes) -> str:
    return line.decode("utf-8", "replace").rstrip("\r\n")


def _blocks_backwards(path: str | os.PathLike[str], window: int):
    """(offset, bytes) of blocks of whole lines, from the end of the file back ``window`` bytes."""
    try:
        fh = open(path, "rb")
    except OSError:
        return
    with fh:
        size = os.fstat(fh.fileno()).st_size
        floor = max(0, size - window)
        position = size
        rest = b""
        while position > floor:
            step = min(_CHUNK, position - floor)
            position -= step
            fh.seek(position)
            block = fh.read(step) + rest
            if position > floor:
                cut = block.find(b"\n")
                if cut < 0:
                    rest = block
                    continue
                rest, block = block[:cut], block[cut + 1:]
                yield position + cut + 1, block.rstrip(b"\n") if block.endswith(b"\n") else block
            else:
                start = position
                if floor > 0:  # the window cut a line: drop its partial start
                    cut = block.find(b"\n")
                    block = block[cut + 1:] if cut >= 0 else b""
                    start += cut + 1 if cut >= 0 else 0
                yield start, block.rstrip(b"\n") if block.endswith(b"\n") else block


def _lines_backwards(path: str | os.PathLike[str], window: int):
    """(offset, line) from the last line to the first, within ``window`` bytes of the end."""
    for start, block in _blocks_backwards(path, window):
        lines = block.split(b"\n")
        offset = start + len(block)
        for line in reversed(lines):
            offset -= len(line)
            yield offset, line
            offset -= 1
