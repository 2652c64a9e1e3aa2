"""Backend workers: the processes that run a voice agent's function calls, holding the secrets and data stores.

Write a function with :func:`function` in a module listed in ``WORKER_MODULES``; ``python -m workers`` runs
worker processes that take calls from Redis queues (RQ) and send results back to the gateway.
"""

from workers.registry import CallContext, FunctionError, function

__all__ = ["CallContext", "FunctionError", "function"]
