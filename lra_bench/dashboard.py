"""``python -m lra_bench.dashboard``: the W&B comparison report (``make dashboard``); see lra_bench/reporting/dashboard.py."""

from lra_bench.reporting.dashboard import main

if __name__ == "__main__":
    raise SystemExit(main())
