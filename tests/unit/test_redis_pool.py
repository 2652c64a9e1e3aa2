"""The gateway's Redis connections (gateway/redis_pool.py): a blocking pool, commands packed by hiredis."""

from __future__ import annotations

import fakeredis
import pytest
import redis
import redis.asyncio
from rq.job import JobStatus

from gateway.dispatcher import Dispatcher
from gateway.redis_pool import REDIS_CONNECTIONS, CPacking, transaction
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


async def test_a_transaction_runs_its_commands_and_raises_the_first_error() -> None:
    client = fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer())
    await transaction(client, [("SET", "a", "1"), ("RPUSH", "q", "x", "y"), ("SET", "b", "2", "EX", 5)])
    assert await client.mget(["a", "b"]) == [b"1", b"2"] and await client.llen("q") == 2
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):  # fails inside EXEC: the others still ran
        await transaction(client, [("SET", "c", "3"), ("RPUSH", "a", "x")])
    assert await client.get("c") == b"3"
    with pytest.raises(redis.ResponseError):  # refused when queued: EXEC aborts, nothing ran
        await transaction(client, [("SET", "d", "4"), ("NOSUCHCOMMAND", "x")])
    assert await client.get("d") is None
    assert await client.ping()  # every reply was read: the connection went back to the pool clean
    await client.aclose()
