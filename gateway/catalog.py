"""The backend catalog as the gateway sees it: which functions live workers own.

Workers publish their catalog to Redis with an expiry (``workers.worker``); the gateway reads it here, so it
learns what the backend owns without importing any worker code. Reads are cached for a second: a session
start costs no Redis round trip when many sessions start at once.

A session that starts while the catalog cannot be read (Redis down, or just back and empty while the workers
republish) must still protect the backend's functions: otherwise the provider never hears of them, and a call
to one of those names would go to the client for the whole conversation. So the catalog remembers the last
functions it read and every name it ever saw a worker own (one ``Catalog`` per gateway process).
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis
from pydantic import ValidationError

from gateway import metrics
from shared import keys
from shared.envelopes import FunctionSpec, WorkerCatalog
from shared.redis_errors import REDIS_ERRORS

log = logging.getLogger(__name__)


class Catalog:
    def __init__(self, redis: aioredis.Redis, max_age: float = 1.0) -> None:
        self._redis = redis
        self._max_age = max_age
        self._cached: tuple[float, list[WorkerCatalog]] | None = None
        self.last_known: dict[str, FunctionSpec] | None = None
        """The functions of the last read that found any: what a session gets when the catalog is unreadable."""
        self.ever_owned: dict[str, FunctionSpec] = {}
        """Every function a worker was seen to own since this process started (newest definition): a call to
        one of these names is never the client's, even in a session that started without backend functions."""

    async def workers(self) -> list[WorkerCatalog]:
        """Catalogs of the live workers (cached for ``max_age`` seconds). Raises redis errors."""
        now = time.monotonic()
        if self._cached and now - self._cached[0] < self._max_age:
            return self._cached[1]
        ids = sorted(m.decode() if isinstance(m, bytes) else m for m in await self._redis.smembers(keys.CATALOG_INDEX))
        catalogs: list[WorkerCatalog] = []
        expired: list[str] = []
        if ids:
            for worker_id, raw in zip(ids, await self._redis.mget([keys.catalog(i) for i in ids]), strict=True):
                if raw is None:
                    expired.append(worker_id)
                    continue
                try:
                    catalogs.append(WorkerCatalog.from_json(raw))
                except ValidationError:
                    log.warning("ignoring unreadable catalog of worker %s", worker_id)
        if expired:
            await self._redis.srem(keys.CATALOG_INDEX, *expired)
        self._cached = (now, catalogs)
        metrics.live_workers.set(len(catalogs))
        return catalogs

    async def functions(self) -> dict[str, FunctionSpec]:
        """Every backend function by name. When workers disagree (a rolling deploy), the newest catalog wins."""
        owned: dict[str, FunctionSpec] = {}
        for catalog in sorted(await self.workers(), key=lambda c: c.published_at):
            for spec in catalog.functions:
                owned[spec.name] = spec
        if owned:
            self.last_known = owned
            self.ever_owned.update(owned)
        return owned

    async def session_functions(self, wait: float = 2.0, retry_every: float = 0.2) -> dict[str, FunctionSpec]:
        """The functions a new session gets: the current catalog, or during a gap the last one read.

        A gap is Redis failing, or a catalog that is empty after this process has seen functions (Redis just
        restarted empty, the workers have not republished yet: their calls still queue and run once they do).
        When Redis fails and no catalog was ever read, the read is retried for ``wait`` seconds; then the
        Redis error is raised (the session warns its client, BACKEND_UNAVAILABLE).
        """
        deadline = time.monotonic() + wait
        while True:
            try:
                owned = await self.functions()
            except REDIS_ERRORS as exc:
                metrics.redis_errors.inc()
                if self.last_known is not None:
                    log.warning("backend catalog unreadable (%s); using the last one read", type(exc).__name__)
                    return dict(self.last_known)
                if time.monotonic() + retry_every > deadline:
                    raise
                await asyncio.sleep(retry_every)
                continue
            if not owned and self.last_known is not None:
                log.warning("backend catalog empty (Redis restarted? workers restarting?); using the last one read")
                return dict(self.last_known)
            return owned
