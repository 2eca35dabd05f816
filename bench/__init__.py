"""flowtui's benchmark harness (``python -m bench.run``, ``python -m bench.runner_bench``)."""
from __future__ import annotations

import re
from pathlib import Path


def write_section(path: str, heading: str, text: str) -> None:
    """Replace the ``## heading`` section of a markdown file (or add it), keeping the others."""
    target = Path(path)
    old = target.read_text() if target.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    section = f"## {heading}\n\n{text.strip()}\n\n"
    new = pattern.sub(lambda _: section, old) if pattern.search(old) else old.rstrip() + "\n\n" + section
    target.write_text(new.rstrip() + "\n")
