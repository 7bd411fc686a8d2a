"""Benchmark the ListOps generator: wall time and peak memory of the whole process tree, median of repeats.

    python -m data_prep.bench_listops [--repeats 3] [--workers 2] [--train 96000 --val 2000 --test 2000]

Each repeat runs ``python -m data_prep.listops`` in a fresh subprocess into a temporary folder and samples
the summed RSS of that process and its workers every 20 ms. Prints one line per repeat and, last, a JSON
object with the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import psutil


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_once(args: argparse.Namespace, seed: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "data_prep.listops", "--out-dir", out, "--quiet", "--seed", str(seed),
               "--workers", str(args.workers), "--train", str(args.train), "--val", str(args.val), "--test", str(args.test)]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd)
        handle = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, tree_rss(handle))
            time.sleep(0.02)
        elapsed = time.perf_counter() - start
        if proc.returncode:
            raise SystemExit(f"generator failed with status {proc.returncode}")
        return elapsed, peak / 2**20


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_prep.bench_listops", description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--train", type=int, default=96_000)
    p.add_argument("--val", type=int, default=2_000)
    p.add_argument("--test", type=int, default=2_000)
    args = p.parse_args(argv)
    times, peaks = [], []
    for i in range(args.repeats):
        t, m = run_once(args, seed=i)
        times.append(t)
        peaks.append(m)
        print(f"repeat {i}: {t:.1f} s, peak RSS of the process tree {m:.0f} MiB", flush=True)
    rows = args.train + args.val + args.test
    summary = {
        "rows": rows,
        "workers": args.workers,
        "repeats": args.repeats,
        "median_seconds": round(statistics.median(times), 2),
        "min_seconds": round(min(times), 2),
        "median_peak_rss_mib": round(statistics.median(peaks), 1),
        "ms_per_row_per_core": round(1000 * statistics.median(times) * args.workers / rows, 3),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
