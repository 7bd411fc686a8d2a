"""Machine-readable provenance of every preset value: which upstream file and line it comes from, or why it differs.

``records/<model>.yaml`` holds, per preset ``<model>-<task>``, one entry per dotted key of the resolved config:
``{value, source, line[, note]}`` or ``{value, deviation}``. ``loader`` reads and validates those files,
``harness_keys`` lists the keys that are ours alone (run naming, paths, logging cadence) and so need no record,
``check`` finds the keys a preset must record and compares a composed config with its records (used by
``tests/test_provenance.py`` and by ``python -m lra_bench.describe``, which prints each value's source beside it).
"""
