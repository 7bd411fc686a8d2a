"""``python -m lra_bench.report``: the LRA table, efficiency table and plots (``make report``); see lra_bench/reporting/."""

from lra_bench.reporting.report import main

if __name__ == "__main__":
    raise SystemExit(main())
