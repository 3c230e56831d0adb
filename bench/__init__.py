"""Benchmarks: one script per target of ``docs/performance.md``, results as JSON + plots.

``python -m bench`` runs them all and writes ``bench/results/summary.json`` and
``bench/results/README.md``; ``python -m bench NAME`` runs one. Each benchmark also runs
alone as ``python -m bench.NAME`` and prints its JSON.
"""
