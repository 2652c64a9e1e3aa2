"""A call this gateway process waits for: shared by the dispatcher, the enqueue and the watchdog."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from shared import keys
from shared.envelopes import CallJob, CallResult, FunctionSpec


@dataclass
class Pending:
    """One call in flight: its envelope, its function's spec, the future its callers await, and its attempts."""

    job: CallJob
    spec: FunctionSpec
    future: asyncio.Future[CallResult]
    enqueued: bool = False
    attempts: int = 0
    """Runs again after its worker died (idempotent functions only)."""
    job_attempt: int = 0
    """The attempt number in the id of the call's latest RQ job (``keys.job_id``): raised by every re-enqueue,
    whatever its reason, so no two of a call's jobs share an id."""
    queued_at: float = 0.0
    """``time.monotonic()`` of the latest enqueue."""
    dequeued_at: float | None = None
    """When the watchdog first saw the latest job out of its queue with the call unclaimed."""
    on_progress: Callable[[str], None] | None = None
    """Told each progress message the worker publishes while the call runs (``CallProgress``)."""

    def job_id(self, gateway_ref: str) -> str:
        """The id of the call's latest RQ job."""
        return keys.job_id(self.job.call_id, self.job_attempt, gateway_ref)
