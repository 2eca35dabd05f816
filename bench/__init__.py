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


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far, from /proc."""
    import os

    with open(f"/proc/{pid}/stat", "rb") as fh:
        fields = fh.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> str:
    """The machine a figure was measured on, for the benchmarks page."""
    import os
    import platform

    return (f"{platform.node()}: {platform.system()} {platform.release()}, {os.cpu_count()} "
            f"cores, Python {platform.python_version()}")


def markdown_table(rows: list[tuple[str, ...]], headers: tuple[str, ...]) -> str:
    head = "| " + " | ".join(headers) + " |\n|" + "---|" * len(headers)
    return head + "\n" + "\n".join("| " + " | ".join(r) + " |" for r in rows)


def compiled() -> None:
    """Byte-compile flowtui's own modules, as installing the package does: an editable checkout
    run with PYTHONDONTWRITEBYTECODE set would otherwise compile them in every process the
    benchmarks start, a cost no installed copy pays."""
    import compileall

    import flowtui

    root = Path(flowtui.__file__).resolve().parent.parent
    for package in ("cli", "runner", "store", "app"):
        if (root / package).is_dir():
            compileall.compile_dir(root / package, quiet=1)
