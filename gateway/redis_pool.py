"""The gateway's asyncio Redis connections: a blocking pool, commands packed by hiredis, bounded waits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hiredis
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from shared.config import Config
from shared.redis_options import redis_options

REDIS_CONNECTIONS = 100
"""Redis connections one gateway process opens at most (one per command in flight; pub/sub holds one)."""
COMMAND_TIMEOUT = 5.0
"""Seconds a Redis command may wait for its reply before its connection counts as dead (a half-open socket
would otherwise hold a command until the call's deadline, and a readiness check forever)."""
HEALTH_CHECK_INTERVAL = 30
"""Seconds a pooled connection may sit idle before it is PINGed ahead of its next command."""


def redis_pool(url: str, config: Config | None = None) -> aioredis.BlockingConnectionPool:
    """The gateway's Redis connections: a blocking pool, with commands packed by hiredis.

    Blocking: past :data:`REDIS_CONNECTIONS` concurrent commands a caller waits for a connection (its call's
    deadline bounds the wait). redis-py's default pool fails at once instead, and under overload every call's
    enqueue then retried in a loop: a storm of errors that only added load (make bench, 800 calls/s).
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=REDIS_CONNECTIONS,
        timeout=None,
        socket_connect_timeout=2,
        socket_timeout=COMMAND_TIMEOUT,  # the pub/sub listener reads with its own, shorter timeout
        health_check_interval=HEALTH_CHECK_INTERVAL,
        socket_keepalive=True,
        # One immediate retry: after a Redis restart every pooled connection is dead, and without it the first
        # command on each failed (a session starting then got no backend functions: tests/faults).
        retry=Retry(NoBackoff(), 1),
        **redis_options(url, config),
    )
    base = pool.connection_class  # plain, TLS or Unix socket, as the URL says
    pool.connection_class = type(f"CPacking{base.__name__}", (CPacking, base), {})
    return pool


class CPacking(aioredis.Connection):
    """Mixed into the pool's connection class: redis-py's asyncio connections pack commands in Python (43 µs for
    an RQ enqueue here), its synchronous ones with hiredis when installed; this packs with hiredis (6 µs)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:  # "CLIENT SETINFO": the server wants separate words
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # a type Redis cannot take: redis-py's own packer says which, as a DataError
            return super().pack_command(*args)


async def transaction(client: aioredis.Redis, commands: Sequence[Sequence[Any]]) -> None:
    """Run ``commands`` in one ``MULTI``/``EXEC`` round trip; raise the first error a command got.

    The replies are not wanted (an enqueue only writes), and redis-py's pipeline spent a third of the gateway's
    enqueue CPU building and parsing them: a pipeline object per call, a queued command object per command, a
    response callback per reply. A connection that fails is dropped and the transaction sent once more on
    another, at once, as the pool's ``Retry`` does for single commands (after a Redis restart every pooled
    connection is dead); any other failure, cancellation included, drops the connection too, as its replies may
    be left unread.
    """
    pool = client.connection_pool
    for attempt in (0, 1):
        connection = await pool.get_connection()
        try:
            await connection.send_packed_command(connection.pack_commands([("MULTI",), *commands, ("EXEC",)]))
            error: redis.ResponseError | None = None
            for _ in range(len(commands) + 2):  # MULTI's OK, one QUEUED per command, then EXEC's array
                try:
                    reply = await connection.read_response()
                except redis.ResponseError as exc:  # a command refused when queued: EXEC then aborts
                    error = error or exc
                    continue
                if isinstance(reply, list):
                    error = error or next((r for r in reply if isinstance(r, redis.ResponseError)), None)
            if error is not None:
                raise error
            return
        except (redis.ConnectionError, redis.TimeoutError):
            await connection.disconnect()
            if attempt:
                raise
        except BaseException:
            await connection.disconnect()
            raise
        finally:
            await pool.release(connection)
