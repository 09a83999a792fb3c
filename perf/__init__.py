"""Benchmarks for actorcast. ``python -m perf.broadcast --help`` is the entry point.

Helper modules are private (``_name``): each is either a child process the
driver starts (``_node_host``, ``_clients``, ``_floor``) or a small shared
piece (``_proc`` for child pipes, ``_wire`` for payload and frame bytes,
``_stats`` for histograms and Prometheus scraping).
"""
