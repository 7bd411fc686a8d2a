"""Deprecated name, kept for one release: use ``python -m lra_bench.benchmarks.mega`` (``make bench-mega``)."""

import sys

from lra_bench.benchmarks.mega import main

if __name__ == "__main__":
    if "--cell" not in sys.argv:
        print("note: python -m lra_bench.bench_mega is deprecated; use python -m lra_bench.benchmarks.mega", file=sys.stderr)
    raise SystemExit(main())
