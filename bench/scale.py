"""Scale curves: the chain and the 8-wide fan-out at 100, 1,000 and 10,000 tasks, each against
the floor measured beside it; the cost per task must stay flat.

    python -m bench.scale [--write docs/benchmarks.md]
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from pathlib import Path

from bench import compiled, machine, markdown_table, write_section
from bench.run import _flowtui, floor_chain, floor_pool, write_chain, write_wide

SIZES = (100, 1000, 10000)


def bar(value: float, top: float, width: int = 30) -> str:
    return "█" * max(1, round(width * value / top))


def main() -> int:
    compiled()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", help="write the results as markdown to this file")
    args = parser.parse_args()
    rows, chart = [], []
    with tempfile.TemporaryDirectory(prefix="flowtui-scale-") as tmp:
        for n in SIZES:
            for shape in ("chain", "wide"):
                home, pipes = Path(tmp) / f"h{shape}{n}", Path(tmp) / f"p{shape}{n}"
                home.mkdir()
                pipes.mkdir()
                (home / "flowtui.toml").write_text("parallelism = 8\n")
                if shape == "chain":
                    write_chain(pipes, n)
                    floor = floor_chain(n)
                else:
                    write_wide(pipes, n)
                    floor = floor_pool(n, 8)
                took, _, rss = _flowtui(home, pipes, "run", shape)
                per_task = took / n * 1000
                over = (took - floor) / n * 1000
                rows.append((f"{shape}, {n:,} tasks", f"{took:.2f} s", f"{per_task:.2f} ms",
                             f"{floor:.2f} s", f"{took / floor:.2f}x", f"{over:.2f} ms",
                             f"{rss / 1024:.0f} MB"))
                chart.append((f"{shape:>5} {n:>6,}", per_task))
                print(rows[-1], file=sys.stderr)
    table = markdown_table(rows, ("run", "flowtui", "per task", "floor", "ratio",
                                  "over the floor per task", "peak memory"))
    top = max(v for _, v in chart)
    drawing = "\n".join(f"{label}  {bar(v, top)} {v:.2f} ms" for label, v in chart)
    print(table + "\n\n" + drawing)
    if args.write:
        text = (f"Measured {dt.date.today().isoformat()} on {machine()}.\n\n"
                "Command: `python -m bench.scale` (one round each; the floor is measured right "
                "before each run). The whole `flowtui run` command, as in the table above: its "
                "start and the pipeline's load are spread over the tasks, which is why 100 "
                "tasks cost more each.\n\n" + table +
                "\n\nCost per task (flowtui, whole command):\n\n```\n" + drawing + "\n```")
        write_section(args.write, "Scale", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
