"""Benchmarks of aip, run as ``python -m aip.bench SUITE [--json PATH]``.

Every suite measures aip side by side with its baselines in the same run and
reports ratios; nothing here is asserted in the test suite.
"""
