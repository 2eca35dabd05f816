"""Where a `flowtui run` of a 1,000-task chain spends its wall time: the command's start (to its
first spawn), then per task the spawn, the commit, the wait for the task, and the rest of the
loop, beside the bare spawn floor of the same run.

    python -m bench.breakdown [--tasks 1000] [--rounds 3]

Each round runs the real command's code (`flowtui.cli.main`) in a fresh interpreter with timers
around `os.posix_spawn`, the engine's commit and its wait; medians over the rounds.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import compiled, markdown_table
from bench.run import floor_chain, write_chain

_PROBE = r"""
import json, os, selectors, sys, time
T0 = time.perf_counter()
import flowtui.cli as cli
from flowtui.runner import engine as E
spent = {"spawn": 0.0, "commit": 0.0, "wait": 0.0, "loop": 0.0}
first = []
def timed(obj, name, key):
    orig = getattr(obj, name)
    def call(*a, **k):
        t = time.perf_counter()
        try:
            return orig(*a, **k)
        finally:
            spent[key] += time.perf_counter() - t
    setattr(obj, name, call)
spawn = os.posix_spawn
def posix_spawn(*a, **k):
    if not first:
        first.append(time.perf_counter() - T0)
    return spawn(*a, **k)
os.posix_spawn = posix_spawn
timed(os, "posix_spawn", "spawn")
timed(E.Engine, "_flush", "commit")
timed(selectors.EpollSelector, "select", "wait")
timed(E.Engine, "turn", "loop")
cli.main(["--home", sys.argv[1], "--pipelines", sys.argv[2], "run", "chain"])
spent["total"] = time.perf_counter() - T0
spent["start"] = first[0]
print(json.dumps(spent))
"""


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.breakdown")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    compiled()
    n = args.tasks
    rounds: list[dict[str, float]] = []
    floors = []
    with tempfile.TemporaryDirectory(prefix="flowtui-breakdown-") as tmp:
        for i in range(args.rounds):
            home, pipes = Path(tmp) / f"home{i}", Path(tmp) / f"pipes{i}"
            home.mkdir()
            pipes.mkdir()
            write_chain(pipes, n)
            floors.append(floor_chain(n))
            out = subprocess.run([sys.executable, "-P", "-c", _PROBE, str(home), str(pipes)],
                                 capture_output=True, text=True, check=True).stdout
            rounds.append(json.loads(out.strip().splitlines()[-1]))
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    floor = statistics.median(floors)
    other = med["loop"] - med["spawn"] - med["commit"] - med["wait"]
    ms = 1000 / n
    rows = [
        ("start: interpreter, imports, the pipeline read, the home and the run's rows",
         f"{med['start'] * 1000:.0f} ms", f"{med['start'] / floor:.2f}x"),
        ("per task: `posix_spawn` (the floor's own call takes part of this)",
         f"{med['spawn'] * ms:.3f} ms", f"{med['spawn'] / floor:.2f}x"),
        ("per task: the commit (overlaps the next task's start)",
         f"{med['commit'] * ms:.3f} ms", f"{med['commit'] / floor:.2f}x"),
        ("per task: waiting for the task to end", f"{med['wait'] * ms:.3f} ms",
         f"{med['wait'] / floor:.2f}x"),
        ("per task: the rest of the loop (reap, decide, environment, script)",
         f"{other * ms:.3f} ms", f"{other / floor:.2f}x"),
        ("whole command (from the interpreter's first line)", f"{med['total']:.2f} s",
         f"{med['total'] / floor:.2f}x"),
        ("the floor: a bare posix_spawn + waitpid loop", f"{floor:.2f} s", "1.00x"),
    ]
    print(markdown_table(rows, ("part", "time", "share of the floor")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
