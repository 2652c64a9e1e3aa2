"""What "Redis failed" means, defined once for the gateway, the workers and the development launcher.

Two tuples, because two kinds of code catch them. A call's path waits out an *unreachable* Redis (its deadline
bounds the wait) but must not hide a refused command, which is a bug to surface. A background loop (the worker's
catalog heartbeat, the clock refresh) must outlive *any* failed command, a refused one included (a read-only
replica after a failover, an out-of-memory refusal), or the process would stop advertising itself for good.
"""

from __future__ import annotations

import redis

REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError, OSError)
"""Redis is unreachable: no connection, a connection lost, or a reply that did not come in time."""

REDIS_FAILURES: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
"""Any failed Redis command, unreachable Redis included: what a loop that must keep running catches."""
