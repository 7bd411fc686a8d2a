"""Deprecated name, kept for one release: use ``python -m lra_bench.benchmarks.s4`` (``make bench-s4``)."""

import sys

from lra_bench.benchmarks.s4 import main

if __name__ == "__main__":
    if "--cell" not in sys.argv:
        print("note: python -m lra_bench.bench_s4 is deprecated; use python -m lra_bench.benchmarks.s4", file=sys.stderr)
    raise SystemExit(main())
