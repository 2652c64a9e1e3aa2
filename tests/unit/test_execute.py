"""Executing calls: validation, errors, secrets, serialisation; run_call_with on fakeredis; a real RQ worker."""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from collections.abc import Iterator

import fakeredis
import pytest
from pydantic import BaseModel, Field
from rq import Queue, SimpleWorker
from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty

from shared import keys
from shared.clock import CLOCK
from shared.config import get_config
from shared.envelopes import CallJob, CallResult
from workers import CallContext, FunctionError, function, registry
from workers.execute import execute, is_late, run_call_with
from workers.secrets import forget_all, redact, remember, secret

SECRET = "sk-test-9f8e7d6c5b4a"
CALLS: list[str] = []


class EchoArgs(BaseModel):
    text: str = Field(description="What to echo")
    times: int = 1


class Many(BaseModel):
    a: int
    b: int
    c: int
    d: int
    e: int
    f: int
    g: int


class Point(BaseModel):
    x: float
    y: float


def t_echo(args: EchoArgs, ctx: CallContext) -> dict:
    CALLS.append(ctx.call_id)
    return {"echo": args.text * args.times, "call_id": ctx.call_id, "worker": ctx.worker_id}


def t_text(args: EchoArgs) -> str:
    return f"plain {args.text}"


def t_model(args: EchoArgs) -> Point:
    return Point(x=1, y=2)


def t_none(args: EchoArgs) -> None:
    return None


def t_many(args: Many) -> int:
    return args.a


def t_refuse(args: EchoArgs) -> dict:
    raise FunctionError(f"No such city: {args.text} (key {secret('T_SECRET')})")


def t_crash(args: EchoArgs) -> dict:
    raise RuntimeError(f"database password is {secret('T_SECRET')}")


def t_leaky(args: EchoArgs) -> dict:
    return {"oops": secret("T_SECRET")}


def t_set(args: EchoArgs) -> object:
    return {1, 2}


def t_nan(args: EchoArgs) -> float:
    return math.nan


async def t_async(args: EchoArgs, ctx: CallContext) -> dict:
    return {"async": args.text, "worker": ctx.worker_id}


def t_timeout(args: EchoArgs) -> None:
    raise JobTimeoutException("Task exceeded maximum timeout value (2 seconds)")


def t_hang(args: EchoArgs) -> None:
    while True:
        time.sleep(0.05)


FUNCTIONS = [t_echo, t_text, t_model, t_none, t_many, t_refuse, t_crash, t_leaky, t_set, t_nan, t_async, t_hang]


@pytest.fixture(autouse=True)
def functions(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setenv("T_SECRET", SECRET)
    for fn in FUNCTIONS:
        function(description=fn.__name__, timeout=2.0)(fn)
    function(description="t_timeout", timeout=1.5)(t_timeout)
    CALLS.clear()
    yield
    forget_all()


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def fake(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server)


def make_job(name: str, arguments: object = None, call_id: str = "c1", **fields: object) -> CallJob:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments or {"text": "hi"})
    defaults: dict[str, object] = {"reply_channel": keys.reply_channel("gw1"), "deadline": time.time() + 30}
    return CallJob(call_id=call_id, name=name, arguments=args, **{**defaults, **fields})


def run(name: str, arguments: object = None, redis: object = None) -> CallResult:
    return execute(make_job(name, arguments), redis, "w-test")


def error_of(result: CallResult) -> str:
    assert not result.ok
    return json.loads(result.content)["error"]


# --- execute ----------------------------------------------------------------------------------------------


def test_success_returns_json_and_fills_metadata():
    before = time.time()
    result = run("t_echo", {"text": "ab", "times": 2})
    assert result.ok and result.call_id == "c1" and result.worker_id == "w-test"
    assert json.loads(result.content) == {"echo": "abab", "call_id": "c1", "worker": "w-test"}
    assert before <= result.started_at <= result.finished_at <= time.time()


@pytest.mark.parametrize(
    ("name", "content"), [("t_text", "plain hi"), ("t_model", '{"x":1.0,"y":2.0}'), ("t_none", "null")]
)
def test_return_values_become_content(name: str, content: str):
    assert run(name).content == content


def test_a_number_is_json_text():
    assert run("t_many", dict.fromkeys("abcdefg", 7)).content == "7"


def test_async_function_runs():
    result = run("t_async", {"text": "x"})
    assert result.ok and json.loads(result.content) == {"async": "x", "worker": "w-test"}


def test_unknown_function():
    assert error_of(run("nope")) == "Unknown function: nope"


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [("{not json", "not valid JSON"), ("[1, 2]", "must be a JSON object"), ('"text"', "must be a JSON object"),
     ('{"a": ' + "[" * 100_000, "not valid JSON")],  # deeper than the parser goes: RecursionError
)  # fmt: skip
def test_arguments_that_are_not_a_json_object(arguments: str, problem: str):
    message = error_of(run("t_echo", arguments))
    assert message.startswith("Invalid arguments for t_echo: ") and problem in message


def test_empty_arguments_mean_no_arguments():
    assert error_of(run("t_echo", "  ")) == "Invalid arguments for t_echo: text: Field required"


def test_validation_errors_name_fields_not_values():
    message = error_of(run("t_echo", {"text": "ok", "times": "SENTINEL-VALUE"}))
    assert message.startswith("Invalid arguments for t_echo: times: Input should be a valid integer")
    assert "SENTINEL-VALUE" not in message


def test_validation_errors_are_capped_at_five():
    message = error_of(run("t_many", {}))
    assert message.count("Field required") == 5
    assert message.endswith("(and 2 more)")


def test_function_error_message_is_verbatim_and_redacted():
    assert error_of(run("t_refuse", {"text": "Xyz"})) == "No such city: Xyz (key ***)"


def test_unexpected_exception_gives_no_trace_and_no_secret(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.ERROR, logger="workers.execute")
    result = run("t_crash")
    assert error_of(result) == "t_crash failed: internal error"
    assert SECRET not in result.content and "Traceback" not in result.content
    assert "RuntimeError" not in result.content and "password" not in result.content
    # The worker's own log has the traceback, with the secret masked.
    assert "Traceback" in caplog.text and "database password is ***" in caplog.text
    assert SECRET not in caplog.text


def test_secret_in_a_return_value_is_masked():
    result = run("t_leaky")
    assert result.ok and json.loads(result.content) == {"oops": "***"}


@pytest.mark.parametrize("name", ["t_set", "t_nan"])
def test_non_json_return_value_is_a_failure(name: str):
    assert error_of(run(name)) == f"{name} failed: its result is not JSON-serialisable"


def test_job_timeout_becomes_a_timed_out_result():
    assert error_of(run("t_timeout")) == "t_timeout timed out after 1.5 s"


def test_context_carries_the_redis_client(fake: fakeredis.FakeRedis):
    def t_store(args: EchoArgs, ctx: CallContext) -> int:
        return int(ctx.redis.incr("k"))

    function(description="store")(t_store)
    assert run("t_store", redis=fake).content == "1"
    assert fake.get("k") == b"1"


# --- secrets ----------------------------------------------------------------------------------------------


def test_redact_masks_remembered_values_only(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SHORT", "abc")
    assert secret("SHORT") == "abc"
    assert secret("UNSET_SECRET_X", default="demo-default") == "demo-default"
    assert secret("T_SECRET") == SECRET
    assert redact(f"abc demo-default {SECRET}!") == "abc demo-default ***!"  # short values and defaults stay


def test_redact_masks_the_json_escaped_form():
    tricky = 'pa"ss\\word'
    remember(tricky)
    encoded = json.dumps({"leak": tricky})
    assert tricky not in redact(encoded) and 'pa\\"ss' not in redact(encoded)
    assert json.loads(redact(encoded)) == {"leak": "***"}


def test_missing_secret_without_default_raises():
    with pytest.raises(RuntimeError, match="NO_SUCH_SECRET_VAR"):
        secret("NO_SUCH_SECRET_VAR")


# --- run_call_with ----------------------------------------------------------------------------------------


@pytest.fixture
def subscriber(fake: fakeredis.FakeRedis) -> Iterator[fakeredis.FakeRedis]:
    pubsub = fake.pubsub()
    pubsub.subscribe(keys.reply_channel("gw1"), keys.reply_channel("gw2"))
    while pubsub.get_message(timeout=0.1) is not None:  # the two subscribe confirmations
        pass
    yield pubsub
    pubsub.close()


def published(pubsub) -> list[tuple[str, CallResult]]:  # type: ignore[no-untyped-def]
    out = []
    while (message := pubsub.get_message(timeout=0.1)) is not None:
        if message["type"] == "message":
            out.append((message["channel"].decode(), CallResult.from_json(message["data"])))
    return out


def test_run_call_stores_with_ttl_and_publishes(fake: fakeredis.FakeRedis, subscriber):
    job = make_job("t_echo", {"text": "yo"})
    assert run_call_with(job.to_json(), fake, "w1") == "ok"
    [(channel, result)] = published(subscriber)
    assert channel == job.reply_channel
    assert result.ok and json.loads(result.content)["echo"] == "yo" and result.worker_id == "w1"
    assert CallResult.from_json(fake.get(keys.result("c1"))) == result
    assert 0 < fake.ttl(keys.result("c1")) <= get_config().result_ttl
    assert fake.get(keys.claim("c1")) == b"w1"


def test_failures_are_published_too(fake: fakeredis.FakeRedis, subscriber):
    assert run_call_with(make_job("t_crash").to_json(), fake, "w1") == "failed"
    [(_, result)] = published(subscriber)
    assert result.error == "t_crash failed: internal error"


def test_past_deadline_is_skipped(fake: fakeredis.FakeRedis, subscriber):
    job = make_job("t_echo", deadline=time.time() - 1)
    assert run_call_with(job.to_json(), fake, "w1") == "skipped"
    assert CALLS == [] and published(subscriber) == [] and fake.get(keys.result("c1")) is None


def test_cancelled_is_skipped(fake: fakeredis.FakeRedis, subscriber):
    fake.set(keys.cancelled("c1"), "1")
    assert run_call_with(make_job("t_echo").to_json(), fake, "w1") == "skipped"
    assert CALLS == [] and published(subscriber) == []


def test_duplicate_call_id_executes_once_and_republishes(fake: fakeredis.FakeRedis, subscriber):
    first = make_job("t_echo", reply_channel=keys.reply_channel("gw1"))
    second = make_job("t_echo", reply_channel=keys.reply_channel("gw2"))
    assert run_call_with(first.to_json(), fake, "w1") == "ok"
    assert run_call_with(second.to_json(), fake, "w2") == "republished"
    assert CALLS == ["c1"]
    [(ch1, r1), (ch2, r2)] = published(subscriber)
    assert (ch1, ch2) == (keys.reply_channel("gw1"), keys.reply_channel("gw2"))
    assert r1 == r2 and r2.worker_id == "w1"


def test_duplicate_while_the_first_still_runs_does_nothing(fake: fakeredis.FakeRedis, subscriber):
    fake.set(keys.claim("c1"), "other-worker")
    assert run_call_with(make_job("t_echo").to_json(), fake, "w1") == "duplicate"
    assert CALLS == [] and published(subscriber) == []


def test_a_call_whose_gateway_is_gone_is_not_run(fake: fakeredis.FakeRedis, subscriber):
    alive = keys.gateway_alive(keys.gateway_ref("gw1"))
    assert run_call_with(make_job("t_echo").to_json(), fake, "w1", alive) == "orphaned"
    assert CALLS == [] and published(subscriber) == [] and fake.get(keys.claim("c1")) is None
    fake.set(alive, "1")
    assert run_call_with(make_job("t_echo").to_json(), fake, "w1", alive) == "ok"
    assert CALLS == ["c1"]


def test_unreadable_job_is_dropped(fake: fakeredis.FakeRedis):
    assert run_call_with('{"call_id": "x"}', fake, "w1") == "invalid"


def test_real_alarm_timeout_still_publishes(fake: fakeredis.FakeRedis, subscriber):
    """What RQ does for a job's timeout: SIGALRM raises JobTimeoutException inside the hanging function."""
    started = time.monotonic()
    with UnixSignalDeathPenalty(1, JobTimeoutException):
        outcome = run_call_with(make_job("t_hang").to_json(), fake, "w1")
    assert outcome == "failed" and time.monotonic() - started < 3
    [(_, result)] = published(subscriber)
    assert result.error == "t_hang timed out after 2 s"


# --- through a real RQ worker -----------------------------------------------------------------------------


def test_rq_simple_worker_runs_the_job_by_its_string_path(fake: fakeredis.FakeRedis, subscriber):
    job = make_job("t_echo", {"text": "via rq"}, call_id="rq-1")
    queue = Queue(keys.queue_name("default"), connection=fake)
    rq_job = queue.enqueue_call(
        "workers.execute.run_call", args=(job.to_json(),), job_id=keys.job_id("rq-1"), timeout=5
    )
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        SimpleWorker([queue], connection=fake, name="unit-worker").work(burst=True)
    finally:
        for sig, handler in handlers.items():  # RQ installs its own; give pytest its Ctrl-C back
            signal.signal(sig, handler)
    [(channel, result)] = published(subscriber)
    assert channel == job.reply_channel and result.ok and result.worker_id == "unit-worker"
    assert json.loads(result.content)["echo"] == "via rq"
    rq_job.refresh()
    assert rq_job.get_status() == "finished" and rq_job.return_value() == "ok"


def test_rq_simple_worker_checks_the_gateway_named_in_the_job_id(fake: fakeredis.FakeRedis, subscriber):
    """RQ's own worker (or an older CallWorker, which leaves ``fcg-`` jobs to RQ) claims the same keys."""
    job = make_job("t_echo", call_id="rq-2")
    queue = Queue(keys.queue_name("default"), connection=fake)
    job_id = keys.job_id("rq-2", gateway=keys.gateway_ref("gone"))
    rq_job = queue.enqueue_call("workers.execute.run_call", args=(job.to_json(),), job_id=job_id, timeout=5)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        SimpleWorker([queue], connection=fake, name="unit-worker").work(burst=True)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    rq_job.refresh()
    assert rq_job.return_value() == "orphaned" and CALLS == [] and published(subscriber) == []


# --- clocks -----------------------------------------------------------------------------------------------


class _RedisAt:
    """A client whose ``TIME`` reads the true clock (the Redis server's) while ``time.time`` is skewed."""

    def __init__(self, real) -> None:  # type: ignore[no-untyped-def]
        self.real = real

    def time(self) -> tuple[int, int]:
        now = self.real()
        return int(now), int(now % 1 * 1_000_000)


@pytest.fixture
def skewed_clock(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """This worker's ``time.time()`` is off by ``request.param`` seconds; CLOCK measured against "Redis".
    Returns the true time function (the Redis server's clock)."""
    real = time.time
    monkeypatch.setattr(CLOCK, "offset", 0.0)
    monkeypatch.setattr(CLOCK, "measured", False)
    monkeypatch.setattr(time, "time", lambda: real() + request.param)
    assert CLOCK.measure(_RedisAt(real))
    return real


@pytest.mark.parametrize("skewed_clock", [120.0, -120.0], indirect=True, ids=["fast", "slow"])
def test_a_skewed_worker_judges_deadlines_by_redis_time(skewed_clock, fake: fakeredis.FakeRedis, subscriber):  # type: ignore[no-untyped-def]
    """Deadlines are Redis time: a worker two minutes fast still runs a call with 5 s left, and one two minutes
    slow still skips a call 1 s past its deadline."""
    redis_now = skewed_clock
    in_time = make_job("t_echo", call_id="in-time", deadline=redis_now() + 5)
    late = make_job("t_echo", call_id="late", deadline=redis_now() - 1)
    assert not is_late(in_time)
    assert is_late(late)
    assert run_call_with(in_time.to_json(), fake, "w1") == "ok"
    assert run_call_with(late.to_json(), fake, "w1") == "skipped"
    assert CALLS == ["in-time"]


@pytest.mark.parametrize("skewed_clock", [120.0], indirect=True)
def test_the_context_deadline_is_on_the_workers_clock(skewed_clock):  # type: ignore[no-untyped-def]
    seen: dict[str, float] = {}

    def t_deadline(ctx: CallContext) -> int:
        seen.update(deadline=ctx.deadline, left=ctx.time_left())
        return 0

    function(description="deadline")(t_deadline)
    assert execute(make_job("t_deadline", deadline=skewed_clock() + 5), None, "w1").ok
    assert seen["deadline"] == pytest.approx(time.time() + 5, abs=1)  # time.time() is the skewed local clock
    assert 3 < seen["left"] <= 5


def test_time_left_is_never_negative():
    ctx = CallContext("c", "s", time.time() - 10, "w", None)
    assert ctx.time_left() == 0.0
