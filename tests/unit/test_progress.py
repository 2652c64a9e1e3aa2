"""ctx.progress: a CallProgress on the reply channel, rate-limited, cut, redacted, never raising."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import fakeredis
import pytest
import redis

from shared.envelopes import CallProgress
from workers import CallContext
from workers.progress import MAX_MESSAGE, MIN_INTERVAL, ProgressReporter
from workers.secrets import forget_all, remember

SECRET = "sk-progress-1234abcd"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ctx(fake: fakeredis.FakeRedis, clock: Clock) -> Iterator[CallContext]:
    yield CallContext("c1", "s1", 2e9, "w1", fake, reply_channel="reply", _progress=ProgressReporter(clock))
    forget_all()


@pytest.fixture
def listener(fake: fakeredis.FakeRedis) -> Iterator[redis.client.PubSub]:
    pubsub = fake.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("reply")
    yield pubsub
    pubsub.close()


def received(pubsub: redis.client.PubSub) -> list[CallProgress]:
    """Every report published so far (the subscription confirmation reads as None, hence no early stop)."""
    messages = [pubsub.get_message(timeout=0.01) for _ in range(10)]
    return [CallProgress.from_json(m["data"]) for m in messages if m is not None]


def test_progress_publishes_a_call_progress(ctx: CallContext, listener: redis.client.PubSub):
    assert ctx.progress("Still searching…") is True
    [report] = received(listener)
    assert (report.kind, report.call_id, report.message) == ("progress", "c1", "Still searching…")
    assert report.at > 0


def test_reports_closer_than_the_interval_are_dropped_and_counted(
    ctx: CallContext, listener: redis.client.PubSub, clock: Clock
):
    assert ctx.progress("one")
    clock.now += MIN_INTERVAL / 2
    assert ctx.progress("two") is False
    assert ctx.progress("three") is False
    clock.now += MIN_INTERVAL
    assert ctx.progress("four")
    assert [r.message for r in received(listener)] == ["one", "four"]
    assert (ctx._progress.sent, ctx._progress.dropped) == (2, 2)


def test_messages_are_redacted_then_cut(ctx: CallContext, listener: redis.client.PubSub):
    remember(SECRET)
    long = f"key {SECRET} " + "x" * 300
    assert ctx.progress(long)
    [report] = received(listener)
    assert SECRET not in report.message and report.message.startswith("key *** x")
    assert len(report.message) == MAX_MESSAGE and report.message.endswith("…")


def test_a_secret_at_the_cut_is_still_redacted(ctx: CallContext, listener: redis.client.PubSub):
    remember(SECRET)
    assert ctx.progress("x" * (MAX_MESSAGE - 5) + SECRET)
    [report] = received(listener)
    assert SECRET[:4] not in report.message


def test_redis_down_is_logged_never_raised(clock: Clock, caplog: pytest.LogCaptureFixture):
    class Down:
        def publish(self, channel: str, message: str) -> int:
            raise redis.ConnectionError(f"Error 111 connecting, while sending {message[:10]}")

    ctx = CallContext("c1", "s1", 2e9, "w1", Down(), reply_channel="reply", _progress=ProgressReporter(clock))
    with caplog.at_level(logging.WARNING, logger="vfg.worker"):
        assert ctx.progress("hello") is False
    assert "progress report not sent" in caplog.text


def test_nothing_after_cancel_or_without_a_reply_channel(
    ctx: CallContext, fake: fakeredis.FakeRedis, listener: redis.client.PubSub
):
    ctx.cancel()
    assert ctx.progress("late") is False
    assert CallContext("c2", "s1", 2e9, "w1", fake).progress("no channel") is False
    assert received(listener) == []


def test_aprogress_from_an_async_function(ctx: CallContext, listener: redis.client.PubSub):
    assert asyncio.run(ctx.aprogress("async")) is True
    assert [r.message for r in received(listener)] == ["async"]
