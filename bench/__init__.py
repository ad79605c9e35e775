"""Benchmarks for slotfleet: measure and write results; never imported by slotfleet.

Run from the repository root: ``python -m bench.core`` (slotfleet alone, PostgreSQL and
SQLite) and ``python -m bench.compare_chancy`` (slotfleet against Chancy, in a separate
virtualenv). Results go to ``bench/results/`` (ignored by git) and ``docs/benchmarks.md``.
"""
