"""How states and recorded text look in a terminal: state glyphs and colours, and untrusted
text made safe to print (the CLI and the TUI both use these)."""
from __future__ import annotations

import re

GLYPHS = {
    "none": "·", "scheduled": "◌", "queued": "◌", "running": "▶", "up_for_retry": "↻",
    "up_for_reschedule": "⏲", "success": "✓", "failed": "✗", "upstream_failed": "⇡",
    "skipped": "⊘",
}
COLOURS = {
    "none": "dim", "scheduled": "cyan", "queued": "cyan", "running": "bright_blue",
    "up_for_retry": "yellow", "up_for_reschedule": "cyan", "success": "green", "failed": "red",
    "upstream_failed": "dark_orange", "skipped": "magenta",
}

# C0 controls (but tab and newline), DEL, and C1 controls (0x80-0x9f) become visible text.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]")
# In one table cell or one line, tab and newline too: they would break the layout.
_CONTROL_INLINE = re.compile("[\x00-\x1f\x7f\x80-\x9f]")


def _shown(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return "^" + chr(code + 64)
    if code == 0x7F:
        return "^?"
    return f"<U+{code:04X}>"


def visible(text: str, *, inline: bool = False) -> str:
    """Untrusted text (pipeline files, task output, reasons) made safe for a terminal: control
    characters become visible (ESC -> ``^[``), so the text cannot drive the terminal. With
    ``inline``, tab and newline too."""
    return (_CONTROL_INLINE if inline else _CONTROL).sub(_shown, text)
