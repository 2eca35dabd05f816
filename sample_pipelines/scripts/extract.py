"""Stand-in for an extract job: reports progress and row counts with the ::flowtui protocol."""
import argparse
import time

parser = argparse.ArgumentParser()
parser.add_argument("--source", required=True)
parser.add_argument("--date", required=True)
parser.add_argument("--rows", type=int, default=150000)
parser.add_argument("--seconds", type=float, default=1.0)
args = parser.parse_args()

print(f"extracting {args.source} for {args.date}", flush=True)
steps = 5
for step in range(1, steps + 1):
    time.sleep(args.seconds / steps)
    print(f"::flowtui progress {step}/{steps}", flush=True)
print(f"::flowtui metadata rows={args.rows} source={args.source}", flush=True)
print("done", flush=True)
