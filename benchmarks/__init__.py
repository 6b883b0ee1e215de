"""Benchmarks of mpnb against the stdlib and other process-pool libraries.

``python -m benchmarks`` runs every workload (W1-W11) for mpnb and its peers side by side
and prints one table per workload; ``--only W3,W7`` picks workloads, ``--quick`` takes fewer
repeats, ``--list`` shows what would run. Raw results go to ``benchmarks/results/``.

Every measurement runs in its own interpreter (``python -m benchmarks.case``), under a hard
timeout, with an environment marker that lets the runner find and kill whatever the case
left behind. A case that hangs is recorded as a hang.
"""
