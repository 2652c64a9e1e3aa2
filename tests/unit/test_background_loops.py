"""The gateway's background loops outlive a refused Redis command (an out-of-memory refusal, a permission lost
after an ACL change), not only an unreachable Redis: a loop that ended would leave the liveness key to expire (the
workers then skip this gateway's calls) or the result subscription down (every call waits for its deadline)."""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis
import pytest
import redis

from gateway import enqueue
from gateway.enqueue import Enqueuer
from gateway.results import ResultListener


class Refusing(fakeredis.FakeAsyncRedis):
    """Refuses the first ``refusals`` commands of a kind with a ResponseError, as an OOM'd Redis does."""

    def __init__(self, refusals: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.refusals = refusals

    def _refuse(self) -> None:
        if self.refusals:
            self.refusals -= 1
            raise redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'.")

    async def set(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self._refuse()
        return await super().set(*args, **kwargs)

    async def mget(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self._refuse()
        return await super().mget(*args, **kwargs)


async def test_the_liveness_key_survives_a_refused_write(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(enqueue, "ALIVE_EVERY", 0.01)
    client = Refusing(2)
    enqueuer = Enqueuer(client, fakeredis.FakeRedis(), "0123456789ab", 60)
    loop = asyncio.create_task(enqueuer.keep_alive())
    try:
        for _ in range(100):
            if await client.exists(enqueuer.alive_key):
                break
            await asyncio.sleep(0.01)
        assert not loop.done(), loop
        assert await client.exists(enqueuer.alive_key)
    finally:
        loop.cancel()


async def test_the_result_listener_survives_a_refused_reread() -> None:
    client = Refusing(1)
    listener = ResultListener(client, "vfg:reply:test", lambda result: None, lambda: ["c1"])
    loop = asyncio.create_task(listener.listen())
    try:
        for _ in range(300):  # the first subscription's re-read is refused; the listener subscribes again
            if listener.confirmed.is_set() and not client.refusals:
                break
            await asyncio.sleep(0.01)
        assert not loop.done(), loop
        assert listener.confirmed.is_set()
    finally:
        loop.cancel()
