"""Benchmarks for actorcast: ``python -m perf.broadcast --help`` (fan-out) and
``python -m perf.connections --help`` (connects, disconnects, memory, queries).

Helper modules are private (``_name``): each is either a child process the
driver starts (``_node_host``, ``_clients``, ``_floor``; ``_conn_clients``,
``_conn_floor``, ``_conn_probe`` for connections) or a small shared
piece (``_proc`` for child pipes, ``_wire`` for payload and frame bytes,
``_stats`` for histograms and Prometheus scraping).
"""
