"""The gateway's Redis connections (gateway/redis_pool.py): a blocking pool, commands packed by hiredis."""

from __future__ import annotations

import pytest
import redis.asyncio
from rq.job import JobStatus

from gateway.dispatcher import Dispatcher
from gateway.redis_pool import REDIS_CONNECTIONS, CPacking
from shared.config import Config


async def test_redis_connections_are_waited_for_not_refused() -> None:
    """Past REDIS_CONNECTIONS commands in flight a call waits for a connection: the default pool raised at once,
    and under overload every enqueue retried in a loop (19,000 MaxConnectionsError warnings in one bench run)."""
    dispatcher = Dispatcher(Config(redis_url="redis://127.0.0.1:1/0"))
    pool = dispatcher.redis.connection_pool
    assert isinstance(pool, redis.asyncio.BlockingConnectionPool)
    assert pool.max_connections == REDIS_CONNECTIONS and pool.timeout is None
    assert issubclass(pool.connection_class, CPacking)
    await dispatcher.redis.aclose(close_connection_pool=True)
    dispatcher.sync_redis.close()


@pytest.mark.parametrize(
    "command",
    [
        ("SET", "k", "v", "EX", 300),
        ("HSET", "rq:job:fc-1", "status", JobStatus.QUEUED, "data", b"\x00\xffbinary", "score", 1.5),
        ("CLIENT SETINFO", "LIB-NAME", "redis-py"),
        ("PUBLISH", "vfg:reply:g", "é✓ unicode"),
    ],
)
def test_commands_are_packed_as_redis_py_packs_them(command: tuple) -> None:
    ours = CPacking().pack_command(*command)
    assert b"".join(ours) == b"".join(redis.asyncio.Connection().pack_command(*command))


def test_a_value_redis_cannot_take_is_refused_as_redis_py_refuses_it() -> None:
    with pytest.raises(redis.DataError):
        CPacking().pack_command("SET", "k", None)
