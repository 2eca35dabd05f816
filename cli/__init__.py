"""flowtui: a single-host DAG runner and a terminal UI for it.

The authoring API for Python pipeline files: ``from flowtui import DAG, Bash, task``.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["DAG", "Bash", "task", "__version__"]


def __getattr__(name: str) -> object:
    # Imported on first use so `flowtui --version` and the CLI start fast.
    if name in ("DAG", "Bash", "task"):
        from flowtui.runner import dsl

        return getattr(dsl, name)
    raise AttributeError(f"module 'flowtui' has no attribute {name!r}")
