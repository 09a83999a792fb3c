"""Benchmarks for actorcast: ``python -m perf.broadcast --help`` (fan-out) and
``python -m perf.connections --help`` (connects, disconnects, memory, queries).

Helper modules are private (``_name``): each is either a child process the
driver starts (``_node_host``, ``_clients``, ``_clients_lazy``, ``_floor``,
``_relay_host``; ``_conn_clients``, ``_conn_floor``, ``_conn_probe`` for
connections) or a small shared piece (``_proc`` for child pipes, ``_wire`` for
payload and frame bytes, ``_stats`` for histograms and Prometheus scraping,
``_group`` for the node under test: one node, workers or Redis-joined nodes,
``_redis`` for a private redis-server, ``_run``/``_figures``/``_rate_run`` for
the phases and their arithmetic, ``_publisher`` for fixed-rate publishing,
``_trace`` for py-spy and strace).
"""
