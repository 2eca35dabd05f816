"""flowtui's terminal UI (Textual). Import ``make_app`` from ``flowtui.app.app``."""
