"""The hand-off alone: chains of 200 `date` tasks, the median gap from one task's last clock
reading to the next one's first, a figure per chain.

    python -m bench.handoff [--chains 5]

For comparing two versions in one hour (run it on each, alternating): the full harness
(`python -m bench.run`) measures it too, beside everything else.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from bench import compiled
from bench.run import handoff_latencies


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.handoff")
    parser.add_argument("--chains", type=int, default=5)
    args = parser.parse_args()
    compiled()
    medians = []
    for _ in range(args.chains):
        folder = Path(tempfile.mkdtemp(prefix="flowtui-handoff-"))
        try:
            (folder / "pipelines").mkdir()
            latencies = handoff_latencies(folder / "home", folder / "pipelines", 200)
            medians.append(statistics.median(latencies) * 1000)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    print("hand-off medians (ms):", " ".join(f"{m:.2f}" for m in medians),
          f"| median {statistics.median(medians):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
