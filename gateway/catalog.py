"""The backend catalog as the gateway sees it: which functions live workers own.

Workers publish their catalog to Redis with an expiry (``workers.worker``); the gateway reads it here, so it
learns what the backend owns without importing any worker code. Reads are cached for a second: a session
start costs no Redis round trip when many sessions start at once.
"""

from __future__ import annotations

import logging
import time

import redis.asyncio as aioredis
from pydantic import ValidationError

from shared import keys
from shared.envelopes import FunctionSpec, WorkerCatalog

log = logging.getLogger(__name__)


class Catalog:
    def __init__(self, redis: aioredis.Redis, max_age: float = 1.0) -> None:
        self._redis = redis
        self._max_age = max_age
        self._cached: tuple[float, list[WorkerCatalog]] | None = None

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
        return catalogs

    async def functions(self) -> dict[str, FunctionSpec]:
        """Every backend function by name. When workers disagree (a rolling deploy), the newest catalog wins."""
        owned: dict[str, FunctionSpec] = {}
        for catalog in sorted(await self.workers(), key=lambda c: c.published_at):
            for spec in catalog.functions:
                owned[spec.name] = spec
        return owned
