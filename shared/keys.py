"""Every Redis key and pub/sub channel name the system uses, in one place.

Gateways and workers never build a name by hand: they call these functions, so a reader can see the whole
Redis footprint of the project here, and a change of layout is a change of this one module. Backend functions'
own data (the example notes, the tests' counters) is theirs to name, beside them, under :data:`PREFIX`.
"""

from __future__ import annotations

import hashlib
import re

_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_CALL_JOB_ID = re.compile(r"^fc[0-9]*-([A-Za-z0-9_-]{1,100})$")
_GATEWAY_CALL_JOB_ID = re.compile(r"^fcg[0-9]*-([0-9a-f]{12})-([A-Za-z0-9_-]{1,100})$")
GATEWAY_REF_LENGTH = 12
"""Hex digits of a gateway ref (:func:`gateway_ref`): fixed, so a job id splits into gateway and call unambiguously."""

PREFIX = "vfg"
"""Namespace for everything we store, so the project can share a Redis with other applications."""

CATALOG_INDEX = f"{PREFIX}:catalog:workers"
"""Set of worker ids that have published a catalog (members whose catalog key expired are pruned)."""


def catalog(worker_id: str) -> str:
    """String key: JSON catalog of one worker process, with an expiry refreshed while it is alive."""
    return f"{PREFIX}:catalog:{worker_id}"


def reply_channel(gateway_id: str) -> str:
    """Pub/sub channel on which workers publish results for calls enqueued by one gateway process."""
    return f"{PREFIX}:reply:{gateway_id}"


def result(call_id: str) -> str:
    """String key: the stored ResultEnvelope of a call, kept with a TTL for re-reads after a reconnect."""
    return f"{PREFIX}:result:{call_id}"


def claim(call_id: str) -> str:
    """String key set with NX by the worker that executes a call, so one call id executes at most once.
    Its value is the worker's id (gateways look for calls whose worker died)."""
    return f"{PREFIX}:claim:{call_ref(call_id)}"


def cancelled(call_id: str) -> str:
    """String key set by a gateway when it no longer wants a call's result (cancelled or past deadline)."""
    return f"{PREFIX}:cancelled:{call_ref(call_id)}"


def call_ref(call_id: str) -> str:
    """The call's part of its RQ job ids and of its claim and cancel keys: the call id itself, or its hash
    when RQ would refuse it (RQ accepts only letters, digits, ``_`` and ``-`` in job ids)."""
    if _SAFE_ID.match(call_id):
        return call_id
    return "h" + hashlib.sha256(call_id.encode()).hexdigest()[:40]


def gateway_ref(gateway_id: str) -> str:
    """A gateway process's short, fixed-length name inside its jobs' ids (RQ ids are short and allow few
    characters, while a gateway id holds a host name): a hash of the gateway id."""
    return hashlib.sha256(gateway_id.encode()).hexdigest()[:GATEWAY_REF_LENGTH]


def gateway_alive(ref: str) -> str:
    """String key with a short TTL that a gateway process refreshes while it lives (``ref``: :func:`gateway_ref`).
    A worker does not start a call whose gateway's key is gone: nobody would receive its result."""
    return f"{PREFIX}:gateway:{ref}"


def job_id(call_id: str, attempt: int = 0, gateway: str | None = None) -> str:
    """RQ job id for a call: ``fcg-<gateway>-<ref>`` (``gateway``: the enqueuing gateway's :func:`gateway_ref`),
    ``fcg<n>-<gateway>-<ref>`` for its n-th re-enqueue; ``fc-<ref>`` / ``fc<n>-<ref>`` without a gateway (jobs
    enqueued by older gateways, benchmarks, tests).

    Derived from the call id, so a duplicated request maps to the same job, and a worker that has only the
    job id can name the call's claim and cancel keys (:func:`claim_of_job`) and its gateway's liveness key
    (:func:`gateway_alive_of_job`) before it has read the job. The two forms differ in their first word
    (``fcg`` / ``fc``), not only in the number of parts: a call id may itself look like ``<12 hex>-<rest>``.
    """
    if gateway is None:
        return f"fc-{call_ref(call_id)}" if attempt == 0 else f"fc{attempt}-{call_ref(call_id)}"
    if len(gateway) != GATEWAY_REF_LENGTH or gateway.strip("0123456789abcdef"):
        raise ValueError(f"not a gateway ref: {gateway!r}")
    return f"fcg{attempt or ''}-{gateway}-{call_ref(call_id)}"


def _ref_of_job(rq_job_id: str) -> str | None:
    match = _GATEWAY_CALL_JOB_ID.match(rq_job_id)
    if match:
        return match.group(2)
    match = _CALL_JOB_ID.match(rq_job_id)
    return match.group(1) if match else None


def claim_of_job(rq_job_id: str) -> str | None:
    """:func:`claim` of the call an RQ job runs, from the job id alone; None for a job that is not a call."""
    ref = _ref_of_job(rq_job_id)
    return f"{PREFIX}:claim:{ref}" if ref else None


def cancelled_of_job(rq_job_id: str) -> str | None:
    """:func:`cancelled` of the call an RQ job runs, from the job id alone; None for a job that is not a call."""
    ref = _ref_of_job(rq_job_id)
    return f"{PREFIX}:cancelled:{ref}" if ref else None


def gateway_alive_of_job(rq_job_id: str) -> str | None:
    """:func:`gateway_alive` of the gateway that enqueued a call, from the job id alone; None for a job without a
    gateway ref (older gateways' jobs and jobs that are not calls: they run whatever became of the gateway)."""
    match = _GATEWAY_CALL_JOB_ID.match(rq_job_id)
    return gateway_alive(match.group(1)) if match else None


def queue_name(queue: str) -> str:
    """RQ queue name for one of our logical queues (RQ adds its own ``rq:queue:`` prefix)."""
    return f"{PREFIX}-{queue}"


def conversation_owner(conversation_id: str) -> str:
    """String key: the caller (principal) who started a conversation, with CONVERSATION_TTL; another caller is
    refused it. Its absence means nobody has claimed the id yet."""
    return f"{PREFIX}:conv:{conversation_id}:owner"


def conversation_memory(conversation_id: str) -> str:
    """List key: the conversation's stored turns and backend calls (JSON entries, oldest first), with
    CONVERSATION_TTL and a bounded length."""
    return f"{PREFIX}:conv:{conversation_id}:memory"
