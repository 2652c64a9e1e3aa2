"""The benchmark suite (``make bench``): function-call latency and throughput, sessions, worker scaling.

Results go to ``docs/performance-results.json`` and ``docs/PERFORMANCE.md``; see that document for what is
measured, how, and how to rerun. Nothing in the gateway or the workers imports this package.
"""
