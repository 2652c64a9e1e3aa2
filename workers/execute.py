"""Running one function call: validation, execution, and getting the result back to the gateway.

Two layers:

- :func:`execute` is pure logic: a :class:`CallJob` in, a :class:`CallResult` out. Every failure becomes a result
  the LLM can read; nothing that might hold a secret or internals (exception texts, tracebacks) leaves it.
- :func:`run_call` is the RQ job function (the gateway enqueues ``"workers.execute.run_call"`` by name), and
  what runs under either worker class. It skips calls nobody waits for, makes sure a call id executes at most
  once, and stores + publishes the result. Under :class:`workers.callworker.CallWorker` the claim has already
  ridden in the round trip that fetched the job, and ``run_call`` finds its outcome on the job; under RQ's own
  worker it claims the call itself. :func:`run_call_with` is the same without RQ, for tests.

Timeouts: under :class:`workers.callworker.CallWorker` the runner (:mod:`workers.runner`) bounds a call; under
RQ's own worker RQ raises ``JobTimeoutException`` inside the running function (SIGALRM). Either way the call is
answered "timed out" and the worker takes the next job.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
from typing import Any

import redis
from pydantic import BaseModel, ValidationError
from redis.client import Pipeline
from rq import get_current_job
from rq.timeouts import JobTimeoutException

from shared import keys
from shared.clock import CLOCK
from shared.config import get_config
from shared.envelopes import CallJob, CallResult
from workers import registry
from workers.registry import CallContext, FunctionError, Registered
from workers.secrets import redact

log = logging.getLogger(__name__)

MAX_REPORTED_ERRORS = 5


class _InvalidArguments(Exception):
    """The provider's arguments do not fit the function; the message is safe to show (no input values)."""


def execute(job: CallJob, ctx_redis: redis.Redis, worker_id: str) -> CallResult:
    """Run ``job`` and describe the outcome. Never raises for anything the function does (except shutdown)."""
    started = time.time()
    prepared = prepare(job, ctx_redis, worker_id, started)
    if isinstance(prepared, CallResult):
        return prepared
    entry, args, ctx = prepared
    try:
        value = _call(entry, args, ctx)
    except JobTimeoutException:
        return failed(job, worker_id, started, timed_out_message(job.name))
    except Exception as exc:
        return error_result(job, worker_id, started, exc)
    return success(job, worker_id, started, value)


def prepare(
    job: CallJob, ctx_redis: redis.Redis, worker_id: str, started: float
) -> tuple[Registered, BaseModel, CallContext] | CallResult:
    """The function, its validated arguments and the call's context; or the error result (logged) of a call that
    cannot run (unknown function, invalid arguments)."""
    entry = registry.get(job.name)
    if entry is None:
        log.warning("call %s: unknown function %s", job.call_id, job.name)
        return failed(job, worker_id, started, f"Unknown function: {job.name}")
    try:
        args = parse_arguments(entry, job.arguments)
    except _InvalidArguments as exc:
        log.info("call %s: invalid arguments for %s", job.call_id, job.name)
        return failed(job, worker_id, started, f"Invalid arguments for {job.name}: {exc}")
    # The deadline is in Redis time (shared/clock.py); the function sees it on this machine's clock.
    deadline = CLOCK.to_local(job.deadline)
    ctx = CallContext(job.call_id, job.session_id, deadline, worker_id, ctx_redis, job.principal, job.reply_channel)
    return entry, args, ctx


def failed(job: CallJob, worker_id: str, started: float, message: str) -> CallResult:
    """An error result the LLM reads: ``message``, secrets redacted."""
    return CallResult.failure(
        job.call_id, redact(message), worker_id=worker_id, started_at=started, finished_at=time.time()
    )


def interrupted(job: CallJob, worker_id: str) -> CallResult:
    """The answer to a call its worker stops running (a cold shutdown, Ctrl-C)."""
    return CallResult.failure(job.call_id, f"{job.name} was interrupted", worker_id=worker_id)


def error_result(job: CallJob, worker_id: str, started: float, exc: Exception) -> CallResult:
    """The result of a function that raised ``exc``: a :class:`FunctionError`'s message verbatim, anything else a
    generic "internal error" (its text and traceback go to the worker's log only, redacted)."""
    if isinstance(exc, FunctionError):
        log.info("call %s: %s answered with an error", job.call_id, job.name)
        return failed(job, worker_id, started, exc.message)
    if isinstance(exc, JobTimeoutException):
        log.warning("call %s: %s timed out", job.call_id, job.name)
        return failed(job, worker_id, started, timed_out_message(job.name))
    trace = "".join(traceback.format_exception(exc))
    log.error("call %s: %s raised\n%s", job.call_id, job.name, redact(trace))
    return failed(job, worker_id, started, f"{job.name} failed: internal error")


def success(job: CallJob, worker_id: str, started: float, value: Any) -> CallResult:
    """The result of a function that returned ``value`` (an error result when it is not JSON)."""
    try:
        content = to_content(value)
    except (TypeError, ValueError) as exc:
        log.error("call %s: %s returned a value that is not JSON: %s", job.call_id, job.name, redact(str(exc)))
        return failed(job, worker_id, started, f"{job.name} failed: its result is not JSON-serialisable")
    return CallResult(
        call_id=job.call_id,
        ok=True,
        content=redact(content),
        worker_id=worker_id,
        started_at=started,
        finished_at=time.time(),
    )


def timed_out_message(name: str) -> str:
    entry = registry.get(name)
    return f"{name} timed out after {entry.spec.timeout:g} s" if entry else f"{name} timed out"


def parse_arguments(entry: Registered, arguments: str) -> BaseModel:
    """The validated arguments model, or :class:`_InvalidArguments` naming fields and problems, not values."""
    try:
        data = json.loads(arguments) if arguments.strip() else {}  # some providers send "" for no arguments
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes ("[[[[...")
        raise _InvalidArguments("arguments are not valid JSON") from None
    if not isinstance(data, dict):
        raise _InvalidArguments("arguments must be a JSON object") from None
    try:
        return entry.args_model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        parts = [f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in errors]
        shown = "; ".join(parts[:MAX_REPORTED_ERRORS])
        if len(parts) > MAX_REPORTED_ERRORS:
            shown += f" (and {len(parts) - MAX_REPORTED_ERRORS} more)"
        raise _InvalidArguments(shown) from None


def _call(entry: Registered, args: BaseModel, ctx: CallContext) -> Any:
    if entry.is_async:
        return asyncio.run(entry.invoke(args, ctx))
    return entry.invoke(args, ctx)


def to_content(value: Any) -> str:
    """The function's return value as CallResult content: JSON text, except a string which is sent as is."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return json.dumps(value, allow_nan=False, ensure_ascii=False)


# --- the RQ side ------------------------------------------------------------------------------------------


def run_call(job_json: str) -> str:
    """The RQ job function. Returns a one-word outcome (RQ stores it; the real result goes through Redis).

    The claim's outcome, when the worker already claimed the call as it fetched the job
    (:class:`workers.rq_records.ClaimingJob`), is the job's ``claimed``; otherwise it is claimed here.
    """
    rq_job = get_current_job()
    if rq_job is None:
        raise RuntimeError("run_call must run inside an RQ worker; use run_call_with outside one")
    alive_key = keys.gateway_alive_of_job(rq_job.id)
    claimed = getattr(rq_job, "claimed", None)
    return run_call_with(job_json, rq_job.connection, rq_job.worker_name or "rq-worker", alive_key, claimed)


def run_call_with(
    job_json: str,
    connection: redis.Redis,
    worker_id: str,
    alive_key: str | None = None,
    claimed: int | None = None,
) -> str:
    """Skip, deduplicate, execute, then store and publish the result in one round trip. ``alive_key``: the
    enqueuing gateway's liveness key (:func:`shared.keys.gateway_alive_of_job`), None to skip that check;
    ``claimed``: the outcome of a :func:`claim` already made, None to claim here.

    Returns ``"invalid"``, ``"skipped"``, ``"orphaned"``, ``"duplicate"``, ``"republished"``, ``"ok"`` or
    ``"failed"``.
    """
    job = decode_call(job_json)
    if job is None:
        return "invalid"
    if is_late(job):
        return "skipped"
    ttl = get_config().result_ttl
    if claimed is None:
        cancelled_key, claim_key = keys.cancelled(job.call_id), keys.claim(job.call_id)
        claimed = int(claim(connection, cancelled_key, claim_key, worker_id, ttl, alive_key))
    return run_claimed(job, claimed, connection, worker_id, ttl)


def decode_call(job_json: str) -> CallJob | None:
    """The call envelope of an RQ job, or None (logged) when it is unreadable."""
    try:
        return CallJob.from_json(job_json)
    except ValidationError:
        log.error("dropping an unreadable job (%d bytes)", len(job_json))
        return None


def is_late(job: CallJob) -> bool:
    """True (logged) when nobody waits for this call any more: its gateway answered it with an error.

    The deadline is Redis-server time, compared with this worker's estimate of it (no round trip): a worker
    whose own clock is off by seconds still runs a call in time and skips a late one.
    """
    if CLOCK.now() > job.deadline:
        log.info("call %s: %s skipped, past its deadline", job.call_id, job.name)
        return True
    return False


def run_claimed(job: CallJob, claimed: int, connection: redis.Redis, worker_id: str, ttl: int) -> str:
    """Given the outcome of the :func:`claim`, run the call or explain why not."""
    if claimed == CANCELLED:
        log.info("call %s: %s skipped, cancelled", job.call_id, job.name)
        return "skipped"
    if claimed == ORPHANED:
        # Its gateway died (its liveness key expired): nobody would receive the result, and for a function with
        # side effects the user never learns it ran. Not running it is the only outcome anyone can rely on.
        log.warning("call %s: %s skipped, the gateway that enqueued it is gone", job.call_id, job.name)
        return "orphaned"
    if claimed == TAKEN:
        # Another job with this call id ran (or runs): never execute twice; share its answer if there is one.
        stored = connection.get(keys.result(job.call_id))
        if stored is None:
            log.info("call %s: %s already claimed by another worker", job.call_id, job.name)
            return "duplicate"
        connection.publish(job.reply_channel, stored)
        log.info("call %s: %s already done, result republished", job.call_id, job.name)
        return "republished"

    try:
        result = execute(job, connection, worker_id)
    except JobTimeoutException:  # the alarm fired outside the function itself (while validating, serialising)
        result = CallResult.failure(job.call_id, timed_out_message(job.name), worker_id=worker_id)
    except BaseException:
        # A cold shutdown (SystemExit) or Ctrl-C mid-call: answer now rather than leave the gateway waiting.
        stopped = interrupted(job, worker_id)
        store_and_publish(connection, job, stopped, ttl)
        raise
    store_and_publish(connection, job, result, ttl)
    if result.ok:  # logged once the caller has its answer (failures were logged when they happened)
        took = (result.finished_at - result.started_at) * 1000
        log.info("call %s: %s ok in %.1f ms", job.call_id, job.name, took)
    return "ok" if result.ok else "failed"


CLAIMED, TAKEN, CANCELLED, ORPHANED = 1, 0, -1, -2
CLAIM_SCRIPT = """
if redis.call('exists', KEYS[1]) == 1 then return -1 end
if #KEYS > 2 and redis.call('exists', KEYS[3]) == 0 then return -2 end
if redis.call('set', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[2]) then return 1 end
return 0
"""


def claim(
    client: redis.Redis | Pipeline,
    cancelled_key: str,
    claim_key: str,
    worker_id: str,
    ttl: int,
    alive_key: str | None = None,
) -> Any:
    """Unless the call is cancelled, or its gateway is gone (``alive_key`` given and missing), claim it with
    ``SET NX``: :data:`CLAIMED`, :data:`TAKEN` (another worker claimed it), :data:`CANCELLED` or
    :data:`ORPHANED`, at once from a client, or as a pipeline's reply.

    A script, so the checks and the claim are one step: a gateway cannot be seen alive and then the call be
    claimed after its key expired. Sent with ``EVAL`` (not ``EVALSHA``): on a pipeline (the worker's job fetch)
    redis-py would add a ``SCRIPT EXISTS`` round trip for a registered script.
    """
    if alive_key is None:
        return client.eval(CLAIM_SCRIPT, 2, cancelled_key, claim_key, worker_id, ttl)
    return client.eval(CLAIM_SCRIPT, 3, cancelled_key, claim_key, alive_key, worker_id, ttl)


def store_and_publish(connection: redis.Redis, job: CallJob, result: CallResult, ttl: int) -> None:
    """``SET`` the result (for re-reads after a reconnect) and ``PUBLISH`` it, in one pipelined round trip."""
    payload = result.to_json()
    for attempt in (1, 2):
        try:
            with connection.pipeline(transaction=False) as pipe:
                pipe.set(keys.result(job.call_id), payload, ex=ttl)
                pipe.publish(job.reply_channel, payload)
                pipe.execute()
            return
        except JobTimeoutException:
            # RQ's alarm fired after the function returned, during this write. It fires only once, and redis-py
            # dropped the interrupted connection, so writing again is safe.
            if attempt == 2:
                raise
        except redis.RedisError as exc:
            log.error("call %s: could not publish the result (%s)", job.call_id, type(exc).__name__)
            return
