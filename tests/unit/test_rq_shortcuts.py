"""workers.rq_records.install_shortcuts: RQ's per-job Python work made cheaper, with the same results."""

from __future__ import annotations

from datetime import UTC, datetime

import fakeredis
import pytest
import rq.job
import rq.queue
import rq.registry
import rq.results
from rq import Queue
from rq.serializers import DefaultSerializer, JSONSerializer
from rq.utils import str_to_date, utcformat

from workers import rq_records
from workers.rq_records import install_shortcuts


@pytest.mark.parametrize(
    "text",
    ["2026-12-02T09:15:23.123456Z", b"2026-12-02T09:15:23.123456Z", "2026-12-02T09:15:23Z", "2026-12-02T09:15:23.1Z"],
)
def test_dates_read_as_rq_reads_them(text: str | bytes) -> None:
    ours = rq_records._str_to_date(text)
    assert ours == str_to_date(text) and ours.utcoffset() == str_to_date(text).utcoffset()


@pytest.mark.parametrize("text", ["2026-12-02 09:15:23", "2026-12-02T09:15:23", "2026-12-02T09:15:23+02:00"])
def test_a_date_rq_would_not_read_is_refused_as_rq_refuses_it(text: str) -> None:
    """A date without RQ's ``Z`` is left to RQ's own parser, which refuses it."""
    with pytest.raises(ValueError):
        str_to_date(text)
    with pytest.raises(ValueError):
        rq_records._str_to_date(text)


def test_serializers_resolve_as_rq_resolves_them() -> None:
    install_shortcuts()
    for module in (rq.job, rq.queue, rq.registry, rq.results):
        assert module.resolve_serializer is rq_records._resolve_serializer
    assert rq_records._resolve_serializer(None) is DefaultSerializer
    assert rq_records._resolve_serializer("json") is JSONSerializer
    assert rq_records._resolve_serializer(JSONSerializer) is JSONSerializer
    with pytest.raises(NotImplementedError):
        rq_records._resolve_serializer(object())


def test_a_restored_job_keeps_its_dates() -> None:
    install_shortcuts()
    connection = fakeredis.FakeRedis()
    job = Queue("shortcuts", connection=connection).enqueue("builtins.print")
    job.started_at = datetime(2026, 12, 2, 9, 15, 23, 123456, tzinfo=UTC)
    connection.hset(job.key, "started_at", utcformat(job.started_at))
    fetched = rq.job.Job.fetch(job.id, connection=connection)
    assert fetched.started_at == job.started_at and fetched.enqueued_at == job.enqueued_at
