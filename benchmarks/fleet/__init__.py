"""Fleet benchmark: the real service with hundreds of pipelines under a steady write load.

    python3 -m benchmarks.fleet [--servers 3] [--pipelines-per-server 100]
                                [--rate-per-pipeline 20] [--workers 2] [--duration-s 60]
                                [--modes on,off]

Starts private MariaDB servers and one Kafka broker, one table and one topic per pipeline,
runs the ``deltaforge`` CLI once per stream-sharing mode and reports start-up time, memory,
idle CPU, throughput, end-to-end latency, /metrics cost, worker-kill recovery and binlog
connections per server. docs/performance.md ("Fleet benchmark") explains every figure.
"""
