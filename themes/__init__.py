"""flowtui's themes (dark default, light, high contrast) and the path of its TCSS."""
from __future__ import annotations

from pathlib import Path

from textual.theme import Theme

CSS_PATH = Path(__file__).with_name("flowtui.tcss")

# State colours every theme defines; TCSS uses them as $state-running and so on.
STATES = ("none", "scheduled", "queued", "running", "up_for_retry", "up_for_reschedule",
          "success", "failed", "upstream_failed", "skipped")

DARK = Theme(
    name="flowtui-dark", primary="#5fafff", secondary="#87d7af", accent="#ffaf5f",
    warning="#ffd75f", error="#ff5f5f", success="#5fd787", foreground="#e4e4e4",
    background="#121212", surface="#1c1c1c", panel="#262626", dark=True,
    variables={
        "state-none": "#808080", "state-scheduled": "#5fafaf", "state-queued": "#5fafaf",
        "state-running": "#5fafff", "state-up_for_retry": "#ffd75f",
        "state-up_for_reschedule": "#87afd7", "state-success": "#5fd787",
        "state-failed": "#ff5f5f", "state-upstream_failed": "#ff875f",
        "state-skipped": "#d787d7", "footer-key-foreground": "#ffaf5f",
    },
)
LIGHT = Theme(
    name="flowtui-light", primary="#005faf", secondary="#008700", accent="#af5f00",
    warning="#af8700", error="#d70000", success="#008700", foreground="#1c1c1c",
    background="#ffffff", surface="#f2f2f2", panel="#e4e4e4", dark=False,
    variables={
        "state-none": "#6c6c6c", "state-scheduled": "#008787", "state-queued": "#008787",
        "state-running": "#005fd7", "state-up_for_retry": "#af8700",
        "state-up_for_reschedule": "#005f87", "state-success": "#008700",
        "state-failed": "#d70000", "state-upstream_failed": "#d75f00",
        "state-skipped": "#875f87", "footer-key-foreground": "#af5f00",
    },
)
HIGH_CONTRAST = Theme(
    name="flowtui-high-contrast", primary="#ffff00", secondary="#00ffff", accent="#ffffff",
    warning="#ffff00", error="#ff0000", success="#00ff00", foreground="#ffffff",
    background="#000000", surface="#000000", panel="#000000", dark=True,
    variables={
        "state-none": "#ffffff", "state-scheduled": "#00ffff", "state-queued": "#00ffff",
        "state-running": "#00ffff", "state-up_for_retry": "#ffff00",
        "state-up_for_reschedule": "#00ffff", "state-success": "#00ff00",
        "state-failed": "#ff0000", "state-upstream_failed": "#ff00ff",
        "state-skipped": "#ffffff", "footer-key-foreground": "#ffff00",
    },
)
THEMES = {"dark": DARK, "light": LIGHT, "high-contrast": HIGH_CONTRAST}
