"""Two versions of flowtui in the same hour: the floor, then each version in turn (the order
alternating by round), each on a new home; medians and ratios to the floor of each round.

    python -m bench.versus OTHER_PYTHON [--rounds 5] {chain,wide,backfill}

OTHER_PYTHON is the interpreter of a virtual environment with the other version installed
(for example `git worktree add /tmp/old <commit>`, then `python -m venv /tmp/oldvenv &&
/tmp/oldvenv/bin/pip install -e /tmp/old`); this one is the running interpreter's. The machine
is shared and its disk's speed varies through the day: compare versions only this way.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.run import floor_chain, floor_pool, write_backfill_dag, write_chain, write_wide

_COMPILE = ("import compileall, os, flowtui; "
            "compileall.compile_dir(os.path.dirname(os.path.dirname(flowtui.__file__)), quiet=1)")


def _run(python: str, home: Path, pipes: Path, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run([python, "-P", "-m", "flowtui", "--home", str(home), "--pipelines", str(pipes),
                    *args], check=True, stdout=subprocess.DEVNULL, cwd=tempfile.gettempdir())
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.versus")
    parser.add_argument("other", help="the other version's python")
    parser.add_argument("kind", choices=("chain", "wide", "backfill"))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    pythons = {"other": args.other, "this": sys.executable}
    for python in pythons.values():  # as installing does: no process compiles flowtui itself
        subprocess.run([python, "-c", _COMPILE], check=True)
    times: dict[str, list[float]] = {"floor": [], "other": [], "this": []}
    with tempfile.TemporaryDirectory(prefix="flowtui-versus-") as tmp:
        for i in range(args.rounds):
            if args.kind == "chain":
                times["floor"].append(floor_chain(1000))
            elif args.kind == "wide":
                times["floor"].append(floor_pool(1000, 8))
            else:
                times["floor"].append(floor_pool(3650, 4))
            for who in (("other", "this") if i % 2 == 0 else ("this", "other")):
                home, pipes = Path(tmp) / f"{who}-home{i}", Path(tmp) / f"{who}-pipes{i}"
                home.mkdir()
                pipes.mkdir()
                (home / "flowtui.toml").write_text("parallelism = 8\n")
                if args.kind == "chain":
                    write_chain(pipes, 1000)
                    took = _run(pythons[who], home, pipes, "run", "chain")
                elif args.kind == "wide":
                    write_wide(pipes, 1000)
                    took = _run(pythons[who], home, pipes, "run", "wide")
                else:
                    write_backfill_dag(pipes)
                    took = _run(pythons[who], home, pipes, "backfill", "yearly_chain", "--start",
                                "2025-01-01", "--end", "2025-12-31", "--parallelism", "4",
                                "--wait")
                times[who].append(took)
    for who, values in times.items():
        line = " ".join(f"{v:.2f}" for v in values)
        ratio = "" if who == "floor" else " | ratio {:.2f}x".format(statistics.median(
            v / f for v, f in zip(values, times["floor"])))
        print(f"{who:5s} {line} | median {statistics.median(values):.2f} s{ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
