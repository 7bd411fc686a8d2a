"""``python -m lra_bench.bench``: the efficiency benchmark (``make bench``); see lra_bench/benchmarks/bench.py."""

from lra_bench.benchmarks.bench import main

if __name__ == "__main__":
    main()
