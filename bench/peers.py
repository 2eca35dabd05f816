"""Peers side by side: Luigi runs the same `sh -c true` chain and fan-out, in a virtual
environment of its own (bench/out/luigi-venv, made on first use; never a dependency of
flowtui). Luigi persists nothing and its local scheduler keeps every state in memory.

    python -m bench.peers [--tasks 1000]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

VENV = Path(__file__).resolve().parent / "out" / "luigi-venv"

LUIGI_SCRIPT = r'''
import os, subprocess, sys, tempfile
import luigi

N, MODE, WORKERS = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
MARKS = tempfile.mkdtemp(prefix="luigi-bench-")  # each task's output: how Luigi knows it is done


class T(luigi.Task):
    i = luigi.IntParameter()

    def requires(self):
        return [T(i=self.i - 1)] if MODE == "chain" and self.i > 0 else []

    def output(self):
        return luigi.LocalTarget(os.path.join(MARKS, str(self.i)))

    def run(self):
        subprocess.run(["sh", "-c", "true"], check=True)
        open(self.output().path, "w").close()


class All(luigi.WrapperTask):
    def requires(self):
        return [T(i=N - 1)] if MODE == "chain" else [T(i=i) for i in range(N)]


ok = luigi.build([All()], local_scheduler=True, workers=WORKERS, log_level="ERROR")
sys.exit(0 if ok and len(os.listdir(MARKS)) == N else 1)
'''


def luigi_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "luigi"], check=True)
    return python


def luigi_seconds(n: int, mode: str, workers: int = 1) -> float:
    """The whole command, as for flowtui: interpreter start, scheduling, the n processes."""
    python = luigi_python()
    script = VENV / "bench_luigi.py"
    script.write_text(LUIGI_SCRIPT)
    started = time.perf_counter()
    subprocess.run([str(python), str(script), str(n), mode, str(workers)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=1000)
    args = parser.parse_args()
    print(f"luigi chain {args.tasks}: {luigi_seconds(args.tasks, 'chain'):.2f} s")
    print(f"luigi wide {args.tasks}, 8 workers: {luigi_seconds(args.tasks, 'wide', 8):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
